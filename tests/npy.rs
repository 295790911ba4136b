//! `.npy` files: round trips, NumPy-written files, float64 and big-endian input, and
//! every error naming its file.

use std::path::PathBuf;

use amortize::io::npy::{npy_bytes, read_npy, read_npy_matrix, write_npy, MAGIC};
use amortize::io::temp_path;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amortize-npy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A hand-made file with the given header dict and payload.
fn raw(header: &str, payload: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn round_trips_1d_2d_and_empty() {
    let dir = scratch("round");
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 3.25).collect();
    for shape in [vec![12], vec![3, 4], vec![12, 1], vec![2, 3, 2]] {
        let path = dir.join("a.npy");
        write_npy(&path, &data, &shape).unwrap();
        let a = read_npy(&path).unwrap();
        assert_eq!(a.shape, shape);
        assert_eq!(a.data, data);
        assert!(!temp_path(&path).exists());
        // NumPy requires the header to end on a 64-byte boundary with '\n'.
        let bytes = std::fs::read(&path).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(bytes[9 + hlen], b'\n');
    }
    write_npy(dir.join("e.npy"), &[], &[0, 5]).unwrap();
    let e = read_npy(dir.join("e.npy")).unwrap();
    assert_eq!((e.shape, e.data.len()), (vec![0, 5], 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_numpy_written_files() {
    // Written by NumPy (sbibm reference data).
    let base = amortize::tasks::default_data_dir().join("sbibm/two_moons/obs1");
    let (data, rows, cols) =
        read_npy_matrix(base.join("reference_posterior_samples.npy"), Some(2)).unwrap();
    assert_eq!((rows, cols, data.len()), (10_000, 2, 20_000));
    let obs = read_npy(base.join("observation.npy")).unwrap();
    assert_eq!(obs.shape, vec![1, 2]);
}

#[test]
fn reads_float64_and_big_endian() {
    let dir = scratch("f64");
    let values = [1.5f64, -2.25, 1e-3, 7.0];
    let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = dir.join("d.npy");
    std::fs::write(
        &path,
        raw(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
            &le,
        ),
    )
    .unwrap();
    let a = read_npy(&path).unwrap();
    assert_eq!(a.shape, vec![2, 2]);
    assert_eq!(a.data, values.map(|v| v as f32));
    let be: Vec<u8> = values
        .iter()
        .flat_map(|v| (*v as f32).to_be_bytes())
        .collect();
    std::fs::write(
        &path,
        raw(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }",
            &be,
        ),
    )
    .unwrap();
    assert_eq!(read_npy(&path).unwrap().data, values.map(|v| v as f32));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_name_the_file() {
    let dir = scratch("errors");
    let check = |name: &str, bytes: Option<Vec<u8>>, needle: &str| {
        let path = dir.join(name);
        if let Some(b) = bytes {
            std::fs::write(&path, b).unwrap();
        }
        let e = read_npy(&path).unwrap_err().to_string();
        assert!(e.contains(name), "{name}: {e}");
        assert!(e.contains(needle), "{name}: {e}");
    };
    let four = [0u8; 16];
    check("missing.npy", None, "No such file");
    check("magic.npy", Some(b"PK\x03\x04 not numpy".to_vec()), "magic");
    check("short.npy", Some(b"\x93NU".to_vec()), "magic");
    check(
        "int.npy",
        Some(raw(
            "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }",
            &four,
        )),
        "<i4",
    );
    check(
        "fortran.npy",
        Some(raw(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            &four,
        )),
        "Fortran",
    );
    check(
        "truncated.npy",
        Some(raw(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &four,
        )),
        "payload",
    );
    check(
        "noshape.npy",
        Some(raw("{'descr': '<f4', 'fortran_order': False, }", &four)),
        "shape",
    );
    let mut v9 = raw(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
        &four,
    );
    v9[6] = 9;
    check("version.npy", Some(v9), "version 9");
    // Shape mismatch in the checked reader.
    let path = dir.join("cols.npy");
    write_npy(&path, &[0.0; 6], &[2, 3]).unwrap();
    let e = read_npy_matrix(&path, Some(4)).unwrap_err().to_string();
    assert!(
        e.contains("cols.npy") && e.contains("[rows, 4]") && e.contains("[2, 3]"),
        "{e}"
    );
    write_npy(&path, &[0.0; 8], &[2, 2, 2]).unwrap();
    assert!(read_npy_matrix(&path, None).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_writes_leave_nothing() {
    let dir = scratch("atomic");
    let path = dir.join("out.npy");
    // Shape does not match the data: nothing is written.
    assert!(write_npy(&path, &[1.0, 2.0, 3.0], &[2, 2]).is_err());
    assert!(!path.exists() && !temp_path(&path).exists());
    assert!(npy_bytes(&[1.0], &[]).is_ok());
    // A folder that does not exist: an error naming the path, no temp file left.
    let bad = dir.join("no/such/dir/out.npy");
    let e = write_npy(&bad, &[1.0], &[1]).unwrap_err().to_string();
    assert!(e.contains("out.npy"), "{e}");
    // Overwriting keeps the file whole: the old content until the rename.
    write_npy(&path, &[1.0, 2.0], &[2]).unwrap();
    write_npy(&path, &[3.0; 4], &[2, 2]).unwrap();
    assert_eq!(read_npy(&path).unwrap().data, vec![3.0; 4]);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
