//! Checkpoints in safetensors: every parameter tensor under its layout name (so other
//! tools can load the model), the AdamW moments under `adamw_m.` / `adamw_v.` prefixes,
//! the raw training weights of a run with `--ema` under `train.` (its unprefixed tensors
//! are then the moving average: the model that was evaluated, and the one eval, predict
//! and serve load), and string metadata (configuration, step, epoch). Written atomically: a temporary
//! file renamed into place, so an interrupted write never leaves a half checkpoint.

use anyhow::{bail, ensure, Context, Result};
use crate::data::fsutil::atomic_write;
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Where one named tensor sits in the flat parameter buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl TensorSlot {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parameters, optimizer moments (empty when absent), the raw training weights of a run
/// with `--ema` (empty otherwise) and metadata of one checkpoint.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Checkpoint {
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    /// With `--ema`: the weights training goes on from (`params` is then their moving
    /// average). Empty without.
    pub train_params: Vec<f32>,
    pub metadata: BTreeMap<String, String>,
}

fn total_len(slots: &[TensorSlot]) -> usize {
    slots.iter().map(|s| s.offset + s.len()).max().unwrap_or(0)
}

/// Write `ckpt` to `path` with the tensors named by `slots`, in the safetensors format
/// (8-byte little-endian header length, JSON header, tensor data). The header is built
/// from sorted maps, so the same checkpoint always gives the same bytes.
pub fn save(path: &Path, slots: &[TensorSlot], ckpt: &Checkpoint) -> Result<()> {
    let n = total_len(slots);
    ensure!(ckpt.params.len() == n, "checkpoint has {} parameters, layout needs {n}", ckpt.params.len());
    let with_moments = !ckpt.adam_m.is_empty();
    if with_moments {
        ensure!(ckpt.adam_m.len() == n && ckpt.adam_v.len() == n, "optimizer moments do not match the layout");
    }
    let mut buffers: Vec<(&str, &[f32])> = vec![("", &ckpt.params)];
    if with_moments {
        buffers.push(("adamw_m.", &ckpt.adam_m));
        buffers.push(("adamw_v.", &ckpt.adam_v));
    }
    if !ckpt.train_params.is_empty() {
        ensure!(ckpt.train_params.len() == n, "training weights do not match the layout");
        buffers.push(("train.", &ckpt.train_params));
    }
    let mut header: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    header.insert("__metadata__".into(), serde_json::to_value(&ckpt.metadata)?);
    let mut pieces: Vec<&[f32]> = Vec::new();
    let mut offset = 0usize;
    for (prefix, buf) in &buffers {
        for s in slots {
            let bytes = 4 * s.len();
            header.insert(
                format!("{prefix}{}", s.name),
                serde_json::json!({"dtype": "F32", "shape": s.shape, "data_offsets": [offset, offset + bytes]}),
            );
            offset += bytes;
            pieces.push(&buf[s.offset..s.offset + s.len()]);
        }
    }
    let mut head = serde_json::to_string(&header)?.into_bytes();
    // the format pads the header with spaces to a multiple of 8 bytes
    head.resize(head.len().div_ceil(8) * 8, b' ');
    atomic_write(path, |w| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        for piece in &pieces {
            w.write_all(bytemuck::cast_slice(piece))?; // little-endian hosts, as the format wants
        }
        Ok(())
    })
    .with_context(|| format!("writing checkpoint {}", path.display()))
}

/// Read a checkpoint written by [`save`] for the layout `slots`; every tensor must be
/// present with its shape, or the error says which is not.
pub fn load(path: &Path, slots: &[TensorSlot]) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)?;
    let metadata: BTreeMap<String, String> =
        header.metadata().clone().unwrap_or_default().into_iter().collect();
    let n = total_len(slots);
    let read = |prefix: &str| -> Result<Option<Vec<f32>>> {
        // every tensor is checked before the buffer is allocated: a layout that does not
        // match the file (an edited config.json: --d-model 100000) is an error naming the
        // tensor, never an allocation of the layout's size that aborts the process
        let mut tensors = Vec::with_capacity(slots.len());
        for (i, s) in slots.iter().enumerate() {
            let name = format!("{prefix}{}", s.name);
            let t = match st.tensor(&name) {
                Ok(t) => t,
                Err(_) if i == 0 && !prefix.is_empty() => return Ok(None),
                Err(_) => bail!("checkpoint {} has no tensor {name}", path.display()),
            };
            ensure!(t.dtype() == Dtype::F32, "tensor {name} is {:?}, expected F32", t.dtype());
            ensure!(t.shape() == s.shape.as_slice(), "tensor {name} has shape {:?}, expected {:?}", t.shape(), s.shape);
            tensors.push(t);
        }
        let mut out = vec![0f32; n];
        for (s, t) in slots.iter().zip(&tensors) {
            // the data may be unaligned inside the file buffer: copy bytewise
            let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out[s.offset..s.offset + s.len()]);
            dst.copy_from_slice(t.data());
        }
        Ok(Some(out))
    };
    let params = read("")?.context("checkpoint has no parameters")?;
    let adam_m = read("adamw_m.")?.unwrap_or_default();
    let adam_v = read("adamw_v.")?.unwrap_or_default();
    ensure!(adam_m.len() == adam_v.len(), "checkpoint has only one of the two AdamW moments");
    let train_params = read("train.")?.unwrap_or_default();
    // cudaenc never saves a non-finite parameter (the training loop refuses to), so one
    // here means a damaged file: refuse it whole, rather than let eval, predict or a
    // resume find it in some outputs only (or never, for a finished run's --resume)
    let buffers = [
        ("", &params, f32::NEG_INFINITY),
        ("adamw_m.", &adam_m, f32::NEG_INFINITY),
        ("adamw_v.", &adam_v, 0.0),
        ("train.", &train_params, f32::NEG_INFINITY),
    ];
    for (prefix, buf, min) in buffers {
        if let Some(i) = buf.iter().position(|x| !x.is_finite() || *x < min) {
            let s = slots.iter().find(|s| (s.offset..s.offset + s.len()).contains(&i)).expect("slots cover the buffer");
            bail!(
                "checkpoint {} is broken: {prefix}{}[{}] is {} (cudaenc never saves such a value): retrain the run",
                path.display(),
                s.name,
                i - s.offset,
                buf[i]
            );
        }
    }
    Ok(Checkpoint { params, adam_m, adam_v, train_params, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Vec<TensorSlot> {
        vec![
            TensorSlot { name: "wte".into(), shape: vec![3, 2], offset: 0 },
            TensorSlot { name: "head_b".into(), shape: vec![1], offset: 6 },
        ]
    }

    #[test]
    fn round_trip_with_and_without_moments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let mut ckpt = Checkpoint {
            params: (0..7).map(|i| i as f32 * 0.5).collect(),
            adam_m: vec![1.0; 7],
            adam_v: vec![2.0; 7],
            train_params: Vec::new(),
            metadata: [("step".to_string(), "12".to_string())].into(),
        };
        save(&path, &slots(), &ckpt).unwrap();
        assert_eq!(load(&path, &slots()).unwrap(), ckpt);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
        ckpt.adam_m.clear();
        ckpt.adam_v.clear();
        save(&path, &slots(), &ckpt).unwrap();
        assert_eq!(load(&path, &slots()).unwrap(), ckpt);
        // a run with --ema: the raw weights under train.
        ckpt.train_params = (0..7).map(|i| i as f32 * -0.25).collect();
        save(&path, &slots(), &ckpt).unwrap();
        assert_eq!(load(&path, &slots()).unwrap(), ckpt);
        ckpt.train_params.pop();
        assert!(save(&path, &slots(), &ckpt).unwrap_err().to_string().contains("training weights"));
    }

    #[test]
    fn the_same_checkpoint_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = Checkpoint {
            params: (0..7).map(|i| i as f32 / 3.0).collect(),
            adam_m: vec![0.25; 7],
            adam_v: vec![0.5; 7],
            train_params: Vec::new(),
            metadata: (0..12).map(|i| (format!("key{i}"), format!("value {i}"))).collect(),
        };
        let files: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let path = dir.path().join(format!("c{i}.safetensors"));
                save(&path, &slots(), &ckpt).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| f == &files[0]), "four saves of one checkpoint differ in their bytes");
        // and it is a safetensors file other tools read, metadata included
        let (_, meta) = SafeTensors::read_metadata(&files[0]).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap().get("key11").map(String::as_str), Some("value 11"));
        assert_eq!(load(&dir.path().join("c0.safetensors"), &slots()).unwrap(), ckpt);
    }

    #[test]
    fn wrong_layout_or_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let ckpt = Checkpoint { params: vec![0.0; 7], ..Default::default() };
        save(&path, &slots(), &ckpt).unwrap();
        let mut other = slots();
        other[0].shape = vec![2, 3];
        let err = load(&path, &other).unwrap_err().to_string();
        assert!(err.contains("wte") && err.contains("shape"), "{err}");
        other[0].name = "missing".into();
        assert!(load(&path, &other).unwrap_err().to_string().contains("no tensor missing"));
        std::fs::write(&path, b"not a checkpoint").unwrap();
        assert!(load(&path, &slots()).is_err());
        assert!(save(&path, &slots(), &Checkpoint { params: vec![0.0; 3], ..Default::default() }).is_err());
    }

    #[test]
    fn a_non_finite_value_is_a_broken_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let good = Checkpoint {
            params: vec![0.5; 7],
            adam_m: vec![0.1; 7],
            adam_v: vec![0.2; 7],
            train_params: vec![0.3; 7],
            ..Default::default()
        };
        type Damage = fn(&mut Checkpoint);
        let cases: [(Damage, &str); 5] = [
            (|c| c.train_params[0] = f32::NEG_INFINITY, "train.wte[0] is -inf"),
            (|c| c.params[6] = f32::NAN, "head_b[0] is NaN"),
            (|c| c.params[4] = f32::INFINITY, "wte[4] is inf"),
            (|c| c.adam_m[1] = f32::NAN, "adamw_m.wte[1] is NaN"),
            (|c| c.adam_v[6] = -1.0, "adamw_v.head_b[0] is -1"),
        ];
        for (damage, what) in cases {
            let mut ckpt = good.clone();
            damage(&mut ckpt);
            save(&path, &slots(), &ckpt).unwrap();
            let err = load(&path, &slots()).unwrap_err().to_string();
            assert!(err.contains(what) && err.contains("broken"), "{what}: {err}");
        }
        save(&path, &slots(), &good).unwrap();
        assert_eq!(load(&path, &slots()).unwrap(), good);
    }

    #[test]
    fn a_layout_far_larger_than_the_file_is_an_error_not_an_allocation() {
        // an edited config.json (d_model 100000) gives a layout of many TiB: loading must
        // name the tensor that does not match, before it allocates anything that size
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        save(&path, &slots(), &Checkpoint { params: vec![0.0; 7], ..Default::default() }).unwrap();
        let mut huge = slots();
        huge[0].shape = vec![1 << 22, 1 << 22]; // 2^44 floats: 64 TiB
        huge[1].offset = 1 << 44;
        let err = load(&path, &huge).unwrap_err().to_string();
        assert!(err.contains("wte") && err.contains("shape"), "{err}");
    }
}
