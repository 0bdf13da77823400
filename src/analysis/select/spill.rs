//! Per-image selection on dumps whose images are not contiguous.
//!
//! When an image's rows are spread over row groups or files, no image is known to be complete
//! until the end. Instead of holding every candidate in memory, the pass writes them to
//! temporary partition files chosen by a hash of the image id; afterwards each partition is read
//! back on its own, its candidates grouped by image, and every image finalised exactly as in the
//! streaming case. Memory is bounded by one partition (about [`PARTITION_BYTES`]) plus the
//! buffers, whatever the dump size; the files are removed when the pass ends.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};

use super::{Candidate, CandidateInfo};
use crate::input::ImageKey;
use crate::rng::stable_hash;

/// Target size of one partition's candidates in memory.
pub const PARTITION_BYTES: u64 = 256 << 20;
/// Candidates in memory take about this much each (the struct, its vector slot, grouping).
const CANDIDATE_BYTES: u64 = 160;

/// Partition files being written.
pub struct Spill {
    dir: tempfile::TempDir,
    writers: Vec<BufWriter<File>>,
    /// Candidates written so far.
    pub candidates: u64,
}

/// How many partitions keep each below [`PARTITION_BYTES`] for about `rows` candidates.
pub fn partitions_for(rows: u64) -> usize {
    (rows.saturating_mul(CANDIDATE_BYTES).div_ceil(PARTITION_BYTES)).clamp(1, 4096) as usize
}

impl Spill {
    /// Creates `n` empty partition files in a fresh temporary directory.
    pub fn new(n: usize) -> std::io::Result<Spill> {
        let dir = tempfile::Builder::new().prefix("hardmine-spill-").tempdir()?;
        let writers = (0..n)
            .map(|i| {
                File::create(dir.path().join(format!("part-{i:05}.bin")))
                    .map(|f| BufWriter::with_capacity(1 << 16, f))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Spill { dir, writers, candidates: 0 })
    }

    fn partition(&self, key: &ImageKey) -> usize {
        (stable_hash(key.to_string().as_bytes()) % self.writers.len() as u64) as usize
    }

    /// Appends an image's candidates to its partition.
    pub fn write(&mut self, key: &ImageKey, cands: &[Candidate]) -> std::io::Result<()> {
        let p = self.partition(key);
        let w = &mut self.writers[p];
        for c in cands {
            encode(w, key, c)?;
        }
        self.candidates += cands.len() as u64;
        Ok(())
    }

    /// Flushes the files; then [`Spill::read`] gives each partition back.
    pub fn finish(&mut self) -> std::io::Result<()> {
        for w in &mut self.writers {
            w.flush()?;
        }
        Ok(())
    }

    /// Partitions, for [`Spill::read`].
    pub fn len(&self) -> usize {
        self.writers.len()
    }

    /// Whether there are no partitions.
    pub fn is_empty(&self) -> bool {
        self.writers.is_empty()
    }

    /// The candidates of partition `i`, grouped by image (images in key order, candidates in
    /// dump order).
    pub fn read(&self, i: usize) -> std::io::Result<Vec<(ImageKey, Vec<Candidate>)>> {
        let f = File::open(self.dir.path().join(format!("part-{i:05}.bin")))?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        let mut all: Vec<(ImageKey, Candidate)> = Vec::new();
        while let Some(item) = decode(&mut r)? {
            all.push(item);
        }
        all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.file.cmp(&b.1.file)).then(a.1.row.cmp(&b.1.row)));
        let mut out: Vec<(ImageKey, Vec<Candidate>)> = Vec::new();
        for (k, c) in all {
            match out.last_mut() {
                Some((last, v)) if *last == k => v.push(c),
                _ => out.push((k, vec![c])),
            }
        }
        Ok(out)
    }
}

fn put_opt<W: Write>(w: &mut W, v: Option<&[u8]>) -> std::io::Result<()> {
    match v {
        Some(b) => {
            w.write_all(&[1])?;
            w.write_all(b)
        }
        None => w.write_all(&[0]),
    }
}

fn encode<W: Write>(w: &mut W, key: &ImageKey, c: &Candidate) -> std::io::Result<()> {
    match key {
        ImageKey::Int(i) => {
            w.write_all(&[0])?;
            w.write_all(&i.to_le_bytes())?;
        }
        ImageKey::Str(s) => {
            w.write_all(&[1])?;
            w.write_all(&(s.len() as u32).to_le_bytes())?;
            w.write_all(s.as_bytes())?;
        }
    }
    w.write_all(&c.file.to_le_bytes())?;
    for n in c.count {
        w.write_all(&n.to_le_bytes())?;
    }
    w.write_all(&[u8::from(c.positive)])?;
    w.write_all(&c.row.to_le_bytes())?;
    for x in [c.ce, c.focal].iter().chain(&c.loss).chain(&c.grad) {
        w.write_all(&x.to_le_bytes())?;
    }
    match &c.info {
        None => w.write_all(&[0]),
        Some(info) => {
            w.write_all(&[1])?;
            let bbox: Option<Vec<u8>> = info.bbox.map(|b| b.iter().flat_map(|x| x.to_le_bytes()).collect());
            put_opt(w, bbox.as_deref())?;
            put_opt(w, info.anchor_id.map(i64::to_le_bytes).as_ref().map(|b| &b[..]))?;
            put_opt(w, info.level.map(i64::to_le_bytes).as_ref().map(|b| &b[..]))?;
            w.write_all(&info.label.to_le_bytes())?;
            put_opt(w, info.class.map(i32::to_le_bytes).as_ref().map(|b| &b[..]))?;
            put_opt(w, info.box_loss.map(f64::to_le_bytes).as_ref().map(|b| &b[..]))
        }
    }
}

fn take<const N: usize, R: Read>(r: &mut R) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn flag<R: Read>(r: &mut R) -> std::io::Result<bool> {
    Ok(take::<1, R>(r)?[0] == 1)
}

fn decode<R: Read>(r: &mut R) -> std::io::Result<Option<(ImageKey, Candidate)>> {
    let mut tag = [0u8; 1];
    if r.read(&mut tag)? == 0 {
        return Ok(None);
    }
    let key = if tag[0] == 0 {
        ImageKey::Int(i64::from_le_bytes(take(r)?))
    } else {
        let len = u32::from_le_bytes(take(r)?) as usize;
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)?;
        let s =
            String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        ImageKey::Str(s.into_boxed_str())
    };
    let file = u32::from_le_bytes(take(r)?);
    let mut count = [0u16; 4];
    for n in &mut count {
        *n = u16::from_le_bytes(take(r)?);
    }
    let positive = take::<1, R>(r)?[0] == 1;
    let row = u64::from_le_bytes(take(r)?);
    let mut f = [0f64; 10];
    for x in &mut f {
        *x = f64::from_le_bytes(take(r)?);
    }
    let info = if flag(r)? {
        let bbox = if flag(r)? {
            let mut b = [0f32; 4];
            for x in &mut b {
                *x = f32::from_le_bytes(take(r)?);
            }
            Some(b)
        } else {
            None
        };
        let anchor_id = if flag(r)? { Some(i64::from_le_bytes(take(r)?)) } else { None };
        let level = if flag(r)? { Some(i64::from_le_bytes(take(r)?)) } else { None };
        let label = i32::from_le_bytes(take(r)?);
        let class = if flag(r)? { Some(i32::from_le_bytes(take(r)?)) } else { None };
        let box_loss = if flag(r)? { Some(f64::from_le_bytes(take(r)?)) } else { None };
        Some(Box::new(CandidateInfo { bbox, anchor_id, level, label, class, box_loss }))
    } else {
        None
    };
    let c = Candidate {
        file,
        count,
        positive,
        row,
        ce: f[0],
        focal: f[1],
        loss: [f[2], f[3], f[4], f[5]],
        grad: [f[6], f[7], f[8], f[9]],
        info,
    };
    Ok(Some((key, c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_round_trip_through_partitions_grouped_by_image() {
        let cand = |row: u64, with_info: bool| Candidate {
            file: 2,
            count: [3, 1, 0, 1],
            positive: true,
            row,
            ce: 1.5 + row as f64,
            focal: 0.25,
            loss: [0.1, 0.2, 0.0, 1.2],
            grad: [0.01, 0.02, 0.0, 0.3],
            info: with_info.then(|| {
                Box::new(CandidateInfo {
                    bbox: Some([1.0, 2.0, 3.0, 4.0]),
                    anchor_id: Some(77),
                    level: None,
                    label: 4,
                    class: Some(1),
                    box_loss: Some(0.75),
                })
            }),
        };
        let mut s = Spill::new(3).unwrap();
        let a = ImageKey::Str("img-a".into());
        let b = ImageKey::Int(-5);
        s.write(&a, &[cand(9, true)]).unwrap();
        s.write(&b, &[cand(1, false), cand(2, true)]).unwrap();
        s.write(&a, &[cand(3, false)]).unwrap();
        s.finish().unwrap();
        let mut groups: Vec<(ImageKey, Vec<Candidate>)> =
            (0..s.len()).flat_map(|i| s.read(i).unwrap()).collect();
        groups.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, b);
        assert_eq!(groups[0].1, vec![cand(1, false), cand(2, true)]);
        assert_eq!(groups[1].1, vec![cand(3, false), cand(9, true)]);
        assert_eq!(s.candidates, 4);
        assert_eq!(partitions_for(0), 1);
        assert!(partitions_for(10_000_000_000) > 1000);
    }
}
