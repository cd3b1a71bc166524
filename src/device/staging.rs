//! Several host arrays uploaded in one copy (the training step's batch: ids, lens,
//! labels and the embedding backward order). The host packs the arrays into a staging
//! buffer ([`Packing`]: each part at an offset aligned like a device allocation), one
//! host-to-device copy moves the whole buffer into one device buffer, and the parts are
//! read as typed [`View`]s of it.
//!
//! On cuda the staging buffers are page-locked host memory and the copy is asynchronous
//! (`cuMemcpyHtoDAsync` on the launch stream, no host synchronize): the host packs the
//! next batch while the device still runs the previous step. Two staging buffers
//! alternate; an event recorded after each copy is waited on (on the host) before that
//! buffer is packed again, so a buffer is never overwritten while its copy may still be
//! in flight. The device buffer itself needs no such guard: the copy into it is ordered
//! on the stream after every earlier launch that reads it. On the emulator launches are
//! synchronous and the copy is a plain memory copy; the packing is the same code.

use super::{cuda, Backend, Buf, DeviceSlice, Gpu, View};
use anyhow::{bail, Result};
use bytemuck::Pod;
use std::marker::PhantomData;

/// Alignment of every part in a packed buffer, in bytes: that of a device allocation
/// (cudaMalloc's 256), so a part can be read like a buffer of its own (vector loads
/// included).
pub const PART_ALIGN: usize = 256;

/// Where the parts of a packed buffer lie: part `i` is bytes
/// `offsets[i] .. offsets[i] + sizes[i]`, offsets multiples of [`PART_ALIGN`], in order,
/// not overlapping; `total` is the end of the last part (0 for no parts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packing {
    pub offsets: Vec<usize>,
    pub sizes: Vec<usize>,
    pub total: usize,
}

impl Packing {
    /// The layout of parts of `sizes` bytes, in order.
    pub fn new(sizes: &[usize]) -> Packing {
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut end = 0usize;
        for &s in sizes {
            let off = end.next_multiple_of(PART_ALIGN);
            offsets.push(off);
            end = off + s;
        }
        Packing { offsets, sizes: sizes.to_vec(), total: end }
    }

    /// Write `parts` (as many as the layout has, of its sizes) into `dst[..total]`; the
    /// gaps between parts are zeroed, so the packed bytes depend only on the parts.
    pub fn pack(&self, dst: &mut [u8], parts: &[&[u8]]) -> Result<()> {
        if parts.len() != self.sizes.len() {
            bail!("staging: {} parts given, the layout has {}", parts.len(), self.sizes.len());
        }
        if dst.len() < self.total {
            bail!("staging: a buffer of {} bytes cannot hold {}", dst.len(), self.total);
        }
        let mut end = 0;
        for (i, part) in parts.iter().enumerate() {
            if part.len() != self.sizes[i] {
                bail!("staging: part {i} has {} bytes, the layout says {}", part.len(), self.sizes[i]);
            }
            let off = self.offsets[i];
            dst[end..off].fill(0);
            dst[off..off + part.len()].copy_from_slice(part);
            end = off + part.len();
        }
        Ok(())
    }
}

/// A host staging buffer: page-locked on cuda (with the event of its last copy), plain
/// memory on the emulator.
enum Host {
    Emu(Vec<u8>),
    Cuda(cuda::Pinned),
}

impl Host {
    fn len(&self) -> usize {
        match self {
            Host::Emu(v) => v.len(),
            Host::Cuda(p) => p.len(),
        }
    }
}

/// One device buffer filled by packed uploads, through two alternating host staging
/// buffers. Buffers grow to the largest upload so far and are never shrunk.
pub struct Staging {
    dev: Option<Buf<u8>>,
    host: [Option<Host>; 2],
    /// The host buffer the next upload packs into.
    next: usize,
    /// The layout of the last upload (what [`Staging::part`] reads).
    packing: Packing,
    uploads: u64,
    waits: u64,
}

impl Default for Staging {
    fn default() -> Self {
        Staging::new()
    }
}

impl Staging {
    /// Empty: the first upload allocates.
    pub fn new() -> Staging {
        Staging { dev: None, host: [None, None], next: 0, packing: Packing::default(), uploads: 0, waits: 0 }
    }

    /// Pack `parts` (each any length, 0 included) into a staging buffer and copy it to
    /// the device buffer in one copy, in launch order: launches enqueued before read the
    /// previous upload, launches after read this one. On cuda this returns without
    /// waiting for the device, except (rarely) for the copy two uploads back out of the
    /// same staging buffer.
    pub fn upload(&mut self, gpu: &Gpu, parts: &[&[u8]]) -> Result<()> {
        gpu.not_capturing("a batch upload")?;
        let packing = Packing::new(&parts.iter().map(|p| p.len()).collect::<Vec<_>>());
        let bytes = packing.total;
        if self.dev.as_ref().is_none_or(|d| d.len() < bytes) {
            self.dev = None; // free the old one first (stream-ordered on cuda)
            self.dev = Some(gpu.zeros::<u8>(bytes)?);
        }
        let slot = &mut self.host[self.next];
        if slot.as_ref().is_none_or(|h| h.len() < bytes) {
            *slot = None; // on cuda, dropping waits for its last copy, then frees it
            *slot = Some(match &gpu.backend {
                Backend::Emu(_) => Host::Emu(vec![0; bytes]),
                Backend::Cuda(c) => Host::Cuda(c.alloc_pinned(bytes)?),
            });
        }
        let dev = self.dev.as_ref().expect("allocated above").addr();
        match (slot.as_mut().expect("allocated above"), &gpu.backend) {
            (Host::Emu(v), Backend::Emu(_)) => {
                packing.pack(v, parts)?;
                // SAFETY: the device buffer holds at least `bytes` (grown above); emulator
                // launches are synchronous, so nothing reads it now.
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dev as *mut u8, bytes) };
            }
            (Host::Cuda(p), Backend::Cuda(c)) => {
                if p.wait_for_copy()? {
                    self.waits += 1;
                }
                packing.pack(p.as_mut_slice()?, parts)?;
                c.htod_pinned(dev, p, bytes)?;
            }
            _ => bail!("staging: used with a device other than the one it was first used with"),
        }
        self.next = 1 - self.next;
        self.packing = packing;
        self.uploads += 1;
        Ok(())
    }

    /// The layout of the last upload.
    pub fn packing(&self) -> &Packing {
        &self.packing
    }

    /// Part `i` of the last upload on the device, as `T`s. An error if there is no such
    /// part or its size is not a whole number of `T`s.
    pub fn part<T: Pod>(&self, i: usize) -> Result<View<'_, T>> {
        let (Some(dev), Some(&off), Some(&size)) = (self.dev.as_ref(), self.packing.offsets.get(i), self.packing.sizes.get(i)) else {
            bail!("staging: no part {i} in the last upload ({} parts)", self.packing.sizes.len());
        };
        let each = std::mem::size_of::<T>();
        if size % each != 0 {
            bail!("staging: part {i} has {size} bytes, not a whole number of {each}-byte elements");
        }
        Ok(View { addr: dev.addr() + off as u64, len: size / each, _t: PhantomData })
    }

    /// Uploads so far, and how many of them found their staging buffer's previous copy
    /// still in flight and waited for it on the host (cuda only; expected 0 in steady
    /// state, where a whole step runs between two uses of a buffer).
    pub fn counts(&self) -> (u64, u64) {
        (self.uploads, self.waits)
    }
}
