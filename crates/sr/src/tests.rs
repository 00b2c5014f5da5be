//! Tests with real files in temporary directories, checked by the real `qemu-img`.

use super::*;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 8 * MIB;

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fv-sr-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `qemu-img` with `args`; panics with its output when it fails.
fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run qemu-img ({e}): install qemu-utils (scripts/install-deps.sh)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Deterministic pseudo-random bytes (xorshift64), different for each `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn name(n: u32) -> String {
    format!("{}.qcow2", uuid(n))
}

fn never_cancel() -> impl FnMut(f64) -> bool {
    |_| true
}

/// Writes `data` at `offset` of VDI `vdi` through fv-disk, and into `model`.
fn write(sr: &FileSr, vdi: &str, model: &mut [u8], offset: u64, data: &[u8]) {
    let disk = fv_disk::open_disk(&sr.path(vdi), Some(Format::Qcow2), false).unwrap();
    disk.write_at(data, offset).unwrap();
    disk.flush().unwrap();
    model[offset as usize..][..data.len()].copy_from_slice(data);
}

/// Some writes at unaligned offsets, one spanning clusters, one of zeroes.
fn scribble(sr: &FileSr, vdi: &str, model: &mut [u8], seed: u64) {
    let size = model.len() as u64;
    write(
        sr,
        vdi,
        model,
        12345 * seed % (size / 2),
        &pattern(100_000, seed),
    );
    write(sr, vdi, model, size - 70_000, &pattern(70_000, seed + 1));
    write(sr, vdi, model, MIB + 4096 * seed, &[0; 8192]);
}

/// `vdi` reads as `model` through fv-disk and through qemu-img; every image of the SR passes
/// `qemu-img check`.
fn verify(sr: &FileSr, vdi: &str, model: &[u8]) {
    let disk = fv_disk::open_disk(&sr.path(vdi), Some(Format::Qcow2), true).unwrap();
    assert_eq!(disk.size(), model.len() as u64, "{vdi}");
    let mut back = vec![0; model.len()];
    disk.read_at(&mut back, 0).unwrap();
    assert!(back == model, "{vdi}: data differs from the model");
    drop(disk);
    let model_path = sr.dir().join(".model.raw");
    fs::write(&model_path, model).unwrap();
    qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        s(&model_path),
        s(&sr.path(vdi)),
    ]);
    fs::remove_file(&model_path).unwrap();
    check_all(sr);
}

/// `qemu-img check` finds no errors and no leaks in any image of the SR.
fn check_all(sr: &FileSr) {
    for de in fs::read_dir(sr.dir()).unwrap() {
        let path = de.unwrap().path();
        let n = path.file_name().unwrap().to_str().unwrap();
        if n.ends_with(".qcow2") {
            let out = qemu_img(&["check", "-f", "qcow2", s(&path)]);
            assert!(out.contains("No errors were found"), "{n}: {out}");
        }
    }
}

fn files(sr: &FileSr) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(sr.dir())
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != names::LOCK)
        .collect();
    v.sort();
    v
}

#[test]
fn create_write_snapshot_clone_copy_resize_destroy() {
    let dir = TempDir::new("life");
    let sr = FileSr::open(&dir.0).unwrap();
    let a = name(1);
    let info = sr.create(&uuid(1), SIZE).unwrap();
    assert_eq!(info.name, a);
    assert_eq!(info.virtual_size, SIZE);
    assert_eq!(info.parent, None);
    assert!(!info.hidden);
    assert_eq!(info.format, "qcow2");
    let mut model_a = vec![0u8; SIZE as usize];
    verify(&sr, &a, &model_a);
    scribble(&sr, &a, &mut model_a, 1);
    verify(&sr, &a, &model_a);

    // Snapshot: the snapshot keeps the data as it was; A carries on under its name.
    let fork = sr.snapshot(&a, &uuid(2)).unwrap();
    assert_eq!(fork.vdi.name, a);
    assert_eq!(fork.new.name, name(2));
    assert!(fork.base.hidden);
    assert_eq!(fork.vdi.parent.as_deref(), Some(fork.base.name.as_str()));
    assert_eq!(fork.new.parent.as_deref(), Some(fork.base.name.as_str()));
    assert_eq!(fork.new.virtual_size, SIZE);
    let model_snap = model_a.clone();
    scribble(&sr, &a, &mut model_a, 2);
    verify(&sr, &a, &model_a);
    verify(&sr, &name(2), &model_snap);

    // Clone of the VDI: a third VDI on a second base.
    let fork2 = sr.clone_vdi(&a, &uuid(3)).unwrap();
    assert_eq!(fork2.base.parent.as_deref(), Some(fork.base.name.as_str()));
    let mut model_clone = model_a.clone();
    scribble(&sr, &name(3), &mut model_clone, 3);
    scribble(&sr, &a, &mut model_a, 4);
    verify(&sr, &a, &model_a);
    verify(&sr, &name(2), &model_snap);
    verify(&sr, &name(3), &model_clone);

    // Copy to another SR: flat, the same data.
    let dir2 = TempDir::new("life2");
    let sr2 = FileSr::open(&dir2.0).unwrap();
    let copied = sr.copy(&a, &sr2, &uuid(4), &mut never_cancel()).unwrap();
    assert_eq!(copied.parent, None);
    assert_eq!(copied.virtual_size, SIZE);
    verify(&sr2, &name(4), &model_a);
    // Only non-zero data is written: far less than the disk's size.
    assert!(copied.physical_utilisation < SIZE / 2, "{copied:?}");

    // Grow the clone; shrinking is refused.
    let grown = sr.resize(&name(3), SIZE + 3 * MIB).unwrap();
    assert_eq!(grown.virtual_size, SIZE + 3 * MIB);
    model_clone.resize((SIZE + 3 * MIB) as usize, 0);
    verify(&sr, &name(3), &model_clone);
    write(
        &sr,
        &name(3),
        &mut model_clone,
        SIZE + MIB,
        &pattern(5000, 9),
    );
    verify(&sr, &name(3), &model_clone);
    let err = sr.resize(&name(3), SIZE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("shrink"), "{err}");
    verify(&sr, &name(3), &model_clone);
    // A snapshot of the grown VDI has its size; its data is intact.
    sr.snapshot(&name(3), &uuid(5)).unwrap();
    verify(&sr, &name(5), &model_clone);

    // Base copies are not VDIs to clients.
    let err = sr.destroy(&fork.base.name).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);

    // Destroying everything removes every base copy, coalescing on the way.
    let before = sr.scan().unwrap();
    assert_eq!(before.vdis.iter().filter(|v| !v.hidden).count(), 4);
    assert!(before.ignored.is_empty(), "{:?}", before.ignored);
    for n in [5, 2] {
        let d = sr.destroy(&name(n)).unwrap();
        assert_eq!(d.removed[0], name(n));
        if let Some(c) = d.coalesce {
            sr.coalesce(&c.base, &mut never_cancel()).unwrap();
        }
        check_all(&sr);
    }
    verify(&sr, &a, &model_a);
    verify(&sr, &name(3), &model_clone);
    for n in [1, 3] {
        let d = sr.destroy(&name(n)).unwrap();
        if let Some(c) = d.coalesce {
            sr.coalesce(&c.base, &mut never_cancel()).unwrap();
        }
    }
    assert_eq!(files(&sr), Vec::<String>::new());
    assert_eq!(
        sr.destroy(&name(1)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn sixteen_tib_thin_vdi() {
    let dir = TempDir::new("16t");
    let sr = FileSr::open(&dir.0).unwrap();
    let size = 16u64 << 40;
    let info = sr.create(&uuid(1), size).unwrap();
    assert_eq!(info.virtual_size, size);
    let disk = fv_disk::open_disk(&sr.path(&name(1)), Some(Format::Qcow2), false).unwrap();
    let data = pattern(1 << 16, 7);
    disk.write_at(&data, size - (1 << 16) - 512).unwrap();
    disk.write_at(&data, 9 << 40).unwrap();
    drop(disk);
    let fork = sr.snapshot(&name(1), &uuid(2)).unwrap();
    let copied = sr
        .copy(&name(2), &sr, &uuid(3), &mut never_cancel())
        .unwrap();
    // Copy and clone of a 16 TiB VDI: instant-ish, and files stay small.
    for n in [name(1), name(2), name(3), fork.base.name.clone()] {
        let len = fs::metadata(sr.path(&n)).unwrap().len();
        assert!(len < 8 * MIB, "{n}: {len} bytes");
    }
    assert!(copied.physical_utilisation < 8 * MIB);
    for n in [name(1), name(3)] {
        let disk = fv_disk::open_disk(&sr.path(&n), Some(Format::Qcow2), true).unwrap();
        assert_eq!(disk.size(), size);
        let mut back = vec![0; data.len()];
        disk.read_at(&mut back, size - (1 << 16) - 512).unwrap();
        assert!(back == data, "{n}");
        disk.read_at(&mut back, 9 << 40).unwrap();
        assert!(back == data, "{n}");
        disk.read_at(&mut back, 5 << 40).unwrap();
        assert!(back.iter().all(|&b| b == 0), "{n}");
    }
    check_all(&sr);
    assert!(sr.physical_size().unwrap() > 0);
    assert!(sr.physical_utilisation().unwrap() <= sr.physical_size().unwrap());
}

/// A VDI with a snapshot whose deletion leaves a base copy to coalesce; returns the VDI's
/// model and the base copy.
fn chain_to_coalesce(sr: &FileSr, leaf: bool) -> (Vec<u8>, String) {
    let mut model = vec![0u8; SIZE as usize];
    sr.create(&uuid(1), SIZE).unwrap();
    scribble(sr, &name(1), &mut model, 1);
    let first = sr.snapshot(&name(1), &uuid(2)).unwrap();
    scribble(sr, &name(1), &mut model, 2);
    // Zeroes over the base's data: the coalesced image must keep them zero.
    let disk = fv_disk::open_disk(&sr.path(&name(1)), Some(Format::Qcow2), false).unwrap();
    disk.write_zeroes(12345, 65536 * 2).unwrap();
    disk.discard(SIZE - 65536, 65536).unwrap();
    drop(disk);
    model[12345..12345 + 65536 * 2].fill(0);
    model[(SIZE - 65536) as usize..].fill(0);
    let second = sr.snapshot(&name(1), &uuid(3)).unwrap();
    scribble(sr, &name(1), &mut model, 3);
    let gone = if leaf { name(3) } else { name(2) };
    let d = sr.destroy(&gone).unwrap();
    let cand = d.coalesce.expect("a base copy with one child");
    assert_eq!(
        cand.child,
        if leaf {
            name(1)
        } else {
            second.base.name.clone()
        }
    );
    assert_eq!(cand.child_is_vdi, leaf);
    let base = cand.base;
    let want = if leaf {
        &second.base.name
    } else {
        &first.base.name
    };
    assert_eq!(&base, want);
    verify(sr, &name(1), &model);
    (model, base)
}

#[test]
fn coalesce_shortens_chains_and_keeps_data() {
    for leaf in [false, true] {
        let dir = TempDir::new("coalesce");
        let sr = FileSr::open(&dir.0).unwrap();
        let (model, base) = chain_to_coalesce(&sr, leaf);
        let before = sr.coalesce_candidates().unwrap();
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0].child_is_vdi, leaf);
        let mut seen = Vec::new();
        let done = sr
            .coalesce(&base, &mut |f| {
                seen.push(f);
                true
            })
            .unwrap();
        assert_eq!(done.removed, base);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]) && seen.last() == Some(&1.0));
        assert!(!sr.path(&base).exists());
        assert!(sr.coalesce_candidates().unwrap().is_empty());
        verify(&sr, &name(1), &model);
        // One base copy is left (the other snapshot's), two VDIs on it.
        let scan = sr.scan().unwrap();
        assert_eq!(scan.vdis.iter().filter(|v| v.hidden).count(), 1, "{scan:?}");
        assert_eq!(scan.vdis.len(), 3, "{scan:?}");
    }
}

#[test]
fn coalesce_interrupted_at_each_step_stays_consistent() {
    for leaf in [false, true] {
        for step in 1..=4 {
            let dir = TempDir::new("crash");
            let sr = FileSr::open(&dir.0).unwrap();
            let (model, base) = chain_to_coalesce(&sr, leaf);
            let snapshot_model = {
                let other = if leaf { name(2) } else { name(3) };
                let disk = fv_disk::open_disk(&sr.path(&other), Some(Format::Qcow2), true).unwrap();
                let mut m = vec![0; SIZE as usize];
                disk.read_at(&mut m, 0).unwrap();
                (other, m)
            };
            let err = sr
                .coalesce_at(&base, &mut never_cancel(), Some(Crash(step)))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Cancelled);
            // As the crash left it: every image consistent, the same data.
            verify(&sr, &name(1), &model);
            verify(&sr, &snapshot_model.0, &snapshot_model.1);
            let tmp_left = files(&sr).iter().any(|f| names::is_tmp(f));
            assert_eq!(tmp_left, step <= 3, "step {step}: {:?}", files(&sr));

            // Restart: recover, then the coalesce runs to its end (or was done).
            let rec = sr.recover().unwrap();
            assert!(files(&sr).iter().all(|f| !names::is_tmp(f)), "{rec:?}");
            if step == 4 {
                assert_eq!(rec.removed, vec![base.clone()]);
            } else {
                sr.coalesce(&base, &mut never_cancel()).unwrap();
            }
            assert!(!sr.path(&base).exists());
            verify(&sr, &name(1), &model);
            verify(&sr, &snapshot_model.0, &snapshot_model.1);
            assert_eq!(sr.scan().unwrap().vdis.len(), 3, "step {step}");
        }
    }
}

#[test]
fn snapshot_interrupted_at_each_step_is_recovered() {
    for step in [1, 2, 3] {
        let dir = TempDir::new("forkcrash");
        let sr = FileSr::open(&dir.0).unwrap();
        let mut model = vec![0u8; SIZE as usize];
        sr.create(&uuid(1), SIZE).unwrap();
        scribble(&sr, &name(1), &mut model, 5);
        let err = sr.fork(&name(1), &uuid(2), Some(Crash(step))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        verify(&sr, &name(1), &model);
        let rec = sr.recover().unwrap();
        verify(&sr, &name(1), &model);
        let scan = sr.scan().unwrap();
        if step <= 2 {
            // Rolled back: the tmp files go; the base was only a second name of the VDI's file.
            assert_eq!(rec.removed.len(), step as usize + 1, "{rec:?}");
            assert_eq!(files(&sr), vec![name(1)]);
        } else {
            // Rolled forward: the VDI is a fresh child of the base, the snapshot exists.
            assert_eq!(rec.completed, vec![name(1)]);
            verify(&sr, &name(2), &model);
            assert_eq!(scan.vdis.len(), 3, "{scan:?}");
            // Writes to the VDI no longer reach the snapshot.
            let snap = model.clone();
            scribble(&sr, &name(1), &mut model, 6);
            verify(&sr, &name(2), &snap);
            verify(&sr, &name(1), &model);
        }
    }
}

#[test]
fn copy_reports_progress_and_cancels_cleanly() {
    let dir = TempDir::new("copy");
    let sr = FileSr::open(&dir.0).unwrap();
    let size = 64 * MIB;
    let mut model = vec![0u8; size as usize];
    sr.create(&uuid(1), size).unwrap();
    for i in 0..16 {
        write(
            &sr,
            &name(1),
            &mut model,
            i * 4 * MIB + 777,
            &pattern(MIB as usize, i),
        );
    }
    sr.snapshot(&name(1), &uuid(2)).unwrap();
    write(&sr, &name(1), &mut model, 3, &pattern(5000, 99));

    let mut calls = 0;
    let err = sr
        .copy(&name(1), &sr, &uuid(3), &mut |f| {
            calls += 1;
            f < 0.5
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(calls > 2);
    assert!(!sr.path(&name(3)).exists());
    assert!(
        files(&sr).iter().all(|f| !names::is_tmp(f)),
        "{:?}",
        files(&sr)
    );

    let mut seen = Vec::new();
    sr.copy(&name(1), &sr, &uuid(3), &mut |f| {
        seen.push(f);
        true
    })
    .unwrap();
    assert!(seen.len() > 10, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(seen.last(), Some(&1.0));
    verify(&sr, &name(3), &model);
    // The name is taken now; copying onto it is refused and changes nothing.
    let err = sr
        .copy(&name(1), &sr, &uuid(3), &mut never_cancel())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    verify(&sr, &name(3), &model);
}

#[test]
fn hostile_names_and_symlinks_are_refused() {
    let dir = TempDir::new("hostile");
    let outside = TempDir::new("outside");
    let sr = FileSr::open(&dir.0).unwrap();
    sr.create(&uuid(1), MIB).unwrap();
    for bad in [
        "../x",
        "..",
        "",
        "a/b",
        "00000000-0000-4000-8000-00000000000G",
    ] {
        let err = sr.create(bad, MIB).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{bad}: {err}");
        assert_eq!(
            sr.snapshot(&name(1), bad).unwrap_err().kind(),
            ErrorKind::Invalid
        );
    }
    let escape = format!("../{}", name(1));
    for vdi in [escape.as_str(), "/etc/passwd", "x.qcow2", ".fv-sr.lock"] {
        for err in [
            sr.destroy(vdi).unwrap_err(),
            sr.resize(vdi, 2 * MIB).unwrap_err(),
            sr.snapshot(vdi, &uuid(9)).unwrap_err(),
            sr.copy(vdi, &sr, &uuid(9), &mut never_cancel())
                .unwrap_err(),
            sr.vdi_info(vdi).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Invalid, "{vdi}: {err}");
        }
    }
    // A symlink with a VDI's name, pointing out of the SR, is not followed.
    let target = outside.0.join("victim.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&target), "1M"]);
    let before = fs::read(&target).unwrap();
    std::os::unix::fs::symlink(&target, sr.path(&name(7))).unwrap();
    for err in [
        sr.destroy(&name(7)).unwrap_err(),
        sr.resize(&name(7), 2 * MIB).unwrap_err(),
        sr.snapshot(&name(7), &uuid(9)).unwrap_err(),
        sr.copy(&name(7), &sr, &uuid(9), &mut never_cancel())
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    }
    assert_eq!(fs::read(&target).unwrap(), before);
    // A VDI whose header names a file outside the SR as backing is refused too.
    let evil = sr.path(&name(8));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&target),
        "-F",
        "qcow2",
        s(&evil),
        "1M",
    ]);
    for err in [
        sr.snapshot(&name(8), &uuid(9)).unwrap_err(),
        sr.copy(&name(8), &sr, &uuid(9), &mut never_cancel())
            .unwrap_err(),
        sr.resize(&name(8), 2 * MIB).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert!(err.to_string().contains("not a base copy"), "{err}");
    }
    assert!(!sr.path(&name(9)).exists());
    let scan = sr.scan().unwrap();
    assert_eq!(scan.vdis.len(), 1);
    let ignored: Vec<&str> = scan.ignored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ignored, vec![name(7).as_str(), name(8).as_str()]);
}

#[test]
fn scan_lists_vdis_and_ignores_strays() {
    let dir = TempDir::new("scan");
    let sr = FileSr::open(&dir.0).unwrap();
    sr.create(&uuid(1), 2 * MIB).unwrap();
    let fork = sr.clone_vdi(&name(1), &uuid(2)).unwrap();
    fs::write(sr.path("notes.txt"), b"hello").unwrap();
    fs::write(sr.path(&name(3)), b"not a qcow2 image").unwrap();
    fs::create_dir(sr.path(&name(4))).unwrap();
    fs::write(sr.path(".hidden"), b"x").unwrap();
    let scan = sr.scan().unwrap();
    let names_found: Vec<&str> = scan.vdis.iter().map(|v| v.name.as_str()).collect();
    let mut want = vec![name(1), name(2), fork.base.name.clone()];
    want.sort();
    assert_eq!(names_found, want);
    for v in &scan.vdis {
        assert_eq!(v.virtual_size, 2 * MIB);
        assert_eq!(v.hidden, v.name == fork.base.name);
        assert!(v.physical_utilisation > 0);
        assert_eq!(v.parent.is_some(), !v.hidden);
        assert_eq!(sr.vdi_info(&v.name).unwrap(), *v);
    }
    let ignored: Vec<&str> = scan.ignored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        ignored,
        vec![name(3).as_str(), name(4).as_str(), "notes.txt"]
    );
    // recover leaves strays alone.
    sr.recover().unwrap();
    assert!(sr.path("notes.txt").exists() && sr.path(".hidden").exists());
    assert_eq!(sr.scan().unwrap(), scan);
}

#[test]
fn concurrent_operations_on_one_name_are_refused() {
    let dir = TempDir::new("busy");
    let sr = FileSr::open(&dir.0).unwrap();
    sr.create(&uuid(1), MIB).unwrap();
    // A live operation's tmp file: creating the same name is refused, recover keeps it.
    let tmp = sr.tmp_image(&name(2), MIB, None).unwrap();
    assert_eq!(
        sr.create(&uuid(2), MIB).unwrap_err().kind(),
        ErrorKind::InUse
    );
    let rec = sr.recover().unwrap();
    assert!(rec.removed.is_empty(), "{rec:?}");
    drop(tmp);
    sr.create(&uuid(2), MIB).unwrap();
    assert_eq!(
        sr.create(&uuid(2), MIB).unwrap_err().kind(),
        ErrorKind::Invalid
    );
    check_all(&sr);
}

#[test]
fn coalesce_refuses_a_child_that_changed_under_it() {
    // Written to during the copy (a VM that should not have had it open).
    let dir = TempDir::new("race-write");
    let sr = FileSr::open(&dir.0).unwrap();
    let (mut model, base) = chain_to_coalesce(&sr, true);
    let mut wrote = false;
    let err = sr
        .coalesce(&base, &mut |_| {
            if !wrote {
                wrote = true;
                write(&sr, &name(1), &mut model, 4096, &pattern(3000, 42));
            }
            true
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InUse, "{err}");
    assert!(sr.path(&base).exists());
    assert!(files(&sr).iter().all(|f| !names::is_tmp(f)));
    verify(&sr, &name(1), &model);
    sr.coalesce(&base, &mut never_cancel()).unwrap();
    verify(&sr, &name(1), &model);

    // Snapshotted, or destroyed, during the copy.
    let dir = TempDir::new("race-snap");
    let sr = FileSr::open(&dir.0).unwrap();
    let (model, base) = chain_to_coalesce(&sr, true);
    let before = files(&sr);
    let mut tried = false;
    sr.coalesce(&base, &mut |_| {
        if !tried {
            tried = true;
            // The coalesce holds the VDI's name: the snapshot is refused, changing nothing.
            let err = sr.snapshot(&name(1), &uuid(9)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InUse, "{err}");
            let mut now = files(&sr);
            now.retain(|f| !names::is_tmp(f));
            assert_eq!(now, before);
        }
        true
    })
    .unwrap();
    verify(&sr, &name(1), &model);
    sr.snapshot(&name(1), &uuid(9)).unwrap();
    verify(&sr, &name(9), &model);

    let dir = TempDir::new("race-destroy");
    let sr = FileSr::open(&dir.0).unwrap();
    let (_, base) = chain_to_coalesce(&sr, true);
    let mut destroyed = false;
    let err = sr
        .coalesce(&base, &mut |_| {
            if !destroyed {
                destroyed = true;
                let d = sr.destroy(&name(1)).unwrap();
                assert!(d.removed.contains(&base), "{d:?}");
            }
            true
        })
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotFound | ErrorKind::InUse),
        "{err}"
    );
    assert!(!sr.path(&name(1)).exists() && !sr.path(&base).exists());
    assert!(files(&sr).iter().all(|f| !names::is_tmp(f)));
    check_all(&sr);

    // Only base copies are coalesced.
    let err = sr.coalesce(&name(1), &mut never_cancel()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}
