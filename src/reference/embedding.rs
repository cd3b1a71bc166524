//! Token embedding: out[n] = wte[ids[n]] (a gather); backward scatter-adds into dwte.
//! Kernel: `kernels/embedding.cu`; launcher: `src/ops/embedding.rs`.
//! No positional embedding (the model is a bag of tokens with attention interactions).

use super::Float;

/// out (N, C)  <-  ids (N), wte (V, C).   N = B * T (padded positions included).
pub fn embedding_forward<T: Float>(out: &mut [T], ids: &[u32], wte: &[T], n: usize, c: usize) {
    assert_eq!(out.len(), n * c);
    assert_eq!(ids.len(), n);
    let v = wte.len() / c.max(1);
    for (i, &id) in ids.iter().enumerate() {
        let id = id as usize;
        assert!(id < v, "token id {id} out of vocabulary {v}");
        out[i * c..(i + 1) * c].copy_from_slice(&wte[id * c..(id + 1) * c]);
    }
}

/// out (N, C) = dropout(wte[ids]) (`dropout::dropout_forward` of the gathered rows, the
/// mask of `seed` over the flat tensor): the reference of the fused kernel
/// `embedding_dropout_forward`.
pub fn embedding_dropout_forward<T: Float>(out: &mut [T], ids: &[u32], wte: &[T], seed: u64, p: f32, n: usize, c: usize) {
    let mut rows = vec![T::of(0.0); n * c];
    embedding_forward(&mut rows, ids, wte, n, c);
    super::dropout::dropout_forward(out, &rows, seed, p);
}

/// dwte (V, C) +=  <-  dout (N, C), ids (N).
/// Deterministic: each row of dwte receives its positions' gradients in increasing
/// position order, which is the order the kernel uses (positions stably sorted by id).
pub fn embedding_backward<T: Float>(dwte: &mut [T], dout: &[T], ids: &[u32], n: usize, c: usize) {
    assert_eq!(dout.len(), n * c);
    assert_eq!(ids.len(), n);
    for (i, &id) in ids.iter().enumerate() {
        let id = id as usize;
        let row = &mut dwte[id * c..(id + 1) * c];
        for (r, &d) in row.iter_mut().zip(&dout[i * c..(i + 1) * c]) {
            *r += d;
        }
    }
}

/// The order in which the kernel sums: the positions of the valid tokens, stably sorted
/// by id (the host builds this list per batch). `ids` is laid out (B, T) with review b
/// valid for its first `lens[b]` positions; padded positions are left out (their
/// gradient is zero, and all of them hold id 0: summing them would make one block add
/// thousands of zero rows). Returned as (sorted positions (M), start of each distinct
/// id's run (U)), M the number of valid tokens.
pub fn embedding_backward_order(ids: &[u32], lens: &[u32], t: usize) -> (Vec<u32>, Vec<u32>) {
    assert_eq!(ids.len(), lens.len() * t, "ids must be (B, T) with one length per review");
    let mut pos: Vec<u32> = (0..ids.len()).filter(|&p| p % t < lens[p / t] as usize).map(|p| p as u32).collect();
    pos.sort_by_key(|&p| ids[p as usize]); // stable: positions stay increasing per id
    let mut starts = Vec::new();
    for (i, &p) in pos.iter().enumerate() {
        if i == 0 || ids[pos[i - 1] as usize] != ids[p as usize] {
            starts.push(i as u32);
        }
    }
    (pos, starts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{check_op_gradient, SplitMix64};

    #[test]
    fn embedding_backward_matches_finite_differences() {
        // repeated ids, odd sizes
        for &(n, c, v) in &[(1, 1, 1), (7, 5, 3), (13, 9, 11)] {
            let mut rng = SplitMix64::new(3 + n as u64);
            let ids: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
            let wte = rng.normal_vec(v * c, 1.0);
            let probe = rng.normal_vec(n * c, 1.0);
            let mut dwte = vec![0.0; v * c];
            embedding_backward(&mut dwte, &probe, &ids, n, c);
            let f = |a: &[Vec<f64>]| {
                let mut out = vec![0.0; n * c];
                embedding_forward(&mut out, &ids, &a[0], n, c);
                out
            };
            let report = check_op_gradient(f, &[wte], &probe, &[dwte]);
            println!("embedding N={n} C={c} V={v}: {report} (tol 1e-6)");
            assert!(report.max_rel_err < 1e-6, "embedding: {report}");
        }
    }

    #[test]
    fn backward_order_groups_ids_stably() {
        let ids = [3, 1, 3, 0, 1, 3];
        let (pos, starts) = embedding_backward_order(&ids, &[6], 6);
        assert_eq!(pos, [3, 1, 4, 0, 2, 5]);
        assert_eq!(starts, [0, 1, 3]);
    }

    #[test]
    fn backward_order_leaves_out_padded_positions() {
        // (B=2, T=4): review 0 has 3 valid tokens, review 1 one; padding is id 0
        let ids = [3, 1, 3, 0, 5, 0, 0, 0];
        let (pos, starts) = embedding_backward_order(&ids, &[3, 1], 4);
        assert_eq!(pos, [1, 0, 2, 4]);
        assert_eq!(starts, [0, 1, 3], "id 0 (padding only) gets no run");
        let (pos, starts) = embedding_backward_order(&ids, &[0, 0], 4);
        assert!(pos.is_empty() && starts.is_empty());
    }
}
