//! Reading and writing NumPy `.npy` arrays of `f32`, by hand (format versions 1.0, 2.0
//! and 3.0; see `numpy/lib/format.py`).
//!
//! * Reads accept little- or big-endian `f4` and `f8` (the latter converted to `f32`),
//!   C order only, any rank (the crate uses 1-D and 2-D arrays).
//! * Writes produce version 1.0, `'<f4'`, C order, and are atomic: the bytes go to
//!   `PATH.tmp-<pid>` in the same folder, which is then renamed over `PATH`.
//! * Every error names the file: a missing file, a bad magic string, an unsupported
//!   dtype, Fortran order, a malformed header, a truncated payload, or (for the checked
//!   readers) a shape other than the one expected.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// The six bytes every `.npy` file starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// An array read from a `.npy` file: its shape and its elements in C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The shape as stored (`[]` for a 0-d scalar).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements, row-major.
    pub data: Vec<f32>,
}

impl NpyArray {
    /// Rows and columns of a 2-D array; a 1-D array of length `n` counts as `[n, 1]`
    /// when `as_column` is true and `[1, n]` otherwise.
    pub fn matrix_dims(&self, as_column: bool) -> Option<(usize, usize)> {
        match self.shape.as_slice() {
            [r, c] => Some((*r, *c)),
            [n] if as_column => Some((*n, 1)),
            [n] => Some((1, *n)),
            _ => None,
        }
    }
}

/// A file-format error that names the file.
fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into()),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Element type and byte order from the header's `descr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32 { little: bool },
    F64 { little: bool },
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 { .. } => 4,
            Dtype::F64 { .. } => 8,
        }
    }
}

/// The value of `'key':` in a Python dict literal, up to the next top-level comma.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pattern_single = format!("'{key}'");
    let pattern_double = format!("\"{key}\"");
    let start = header
        .find(&pattern_single)
        .map(|i| i + pattern_single.len())
        .or_else(|| {
            header
                .find(&pattern_double)
                .map(|i| i + pattern_double.len())
        })?;
    let rest = header[start..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    // A tuple value runs to its closing parenthesis; anything else to the next comma
    // or closing brace.
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

fn parse_header(path: &Path, header: &str) -> Result<(Dtype, Vec<usize>)> {
    let descr = header_value(header, "descr")
        .ok_or_else(|| bad(path, format!("npy header has no 'descr': {header:?}")))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = match descr {
        "<f4" | "|f4" | "f4" => Dtype::F32 { little: true },
        ">f4" => Dtype::F32 { little: false },
        "<f8" | "|f8" | "f8" => Dtype::F64 { little: true },
        ">f8" => Dtype::F64 { little: false },
        other => {
            return Err(bad(
                path,
                format!("npy dtype {other:?} is not supported (float32 or float64 only)"),
            ))
        }
    };
    let fortran = header_value(header, "fortran_order").ok_or_else(|| {
        bad(
            path,
            format!("npy header has no 'fortran_order': {header:?}"),
        )
    })?;
    match fortran {
        "False" => {}
        "True" => {
            return Err(bad(
                path,
                "npy array is in Fortran order; only C order is supported (save it with \
                 np.ascontiguousarray)",
            ))
        }
        other => {
            return Err(bad(
                path,
                format!("npy fortran_order {other:?} is not a bool"),
            ))
        }
    }
    let shape_text = header_value(header, "shape")
        .ok_or_else(|| bad(path, format!("npy header has no 'shape': {header:?}")))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(path, format!("npy shape {shape_text:?} is not a tuple")))?;
    let mut shape = Vec::new();
    for part in inner.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let d = part.trim_end_matches('L').parse::<usize>().map_err(|_| {
            bad(
                path,
                format!("npy shape {shape_text:?} has a bad entry {part:?}"),
            )
        })?;
        shape.push(d);
    }
    Ok((dtype, shape))
}

/// Reads a float32 or float64 `.npy` file (float64 is converted to `f32`).
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (bad magic string)"));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad(path, "npy header is truncated"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(bad(
                path,
                format!("npy format version {v} is not supported"),
            ))
        }
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(bad(path, "npy header is truncated"));
    }
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| bad(path, "npy header is not text"))?;
    let (dtype, shape) = parse_header(path, header)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(path, format!("npy shape {shape:?} overflows")))?;
    let payload = &bytes[data_start..];
    let need = count * dtype.size();
    if payload.len() != need {
        return Err(bad(
            path,
            format!(
                "npy payload has {} bytes, shape {shape:?} of {} needs {need}",
                payload.len(),
                match dtype {
                    Dtype::F32 { .. } => "float32",
                    Dtype::F64 { .. } => "float64",
                }
            ),
        ));
    }
    let data: Vec<f32> = match dtype {
        Dtype::F32 { little } => payload
            .chunks_exact(4)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3]];
                if little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                }
            })
            .collect(),
        Dtype::F64 { little } => payload
            .chunks_exact(8)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                (if little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                }) as f32
            })
            .collect(),
    };
    Ok(NpyArray { shape, data })
}

/// Reads a 2-D array (a 1-D array of length `n` is taken as one row `[1, n]`) and checks
/// its number of columns when `cols` is given. Returns `(data, rows, cols)`.
pub fn read_npy_matrix(
    path: impl AsRef<Path>,
    cols: Option<usize>,
) -> Result<(Vec<f32>, usize, usize)> {
    let path = path.as_ref();
    let array = read_npy(path)?;
    let (r, c) = array.matrix_dims(false).ok_or_else(|| {
        bad(
            path,
            format!("expected a 1-D or 2-D array, got shape {:?}", array.shape),
        )
    })?;
    if let Some(want) = cols {
        if c != want {
            return Err(bad(
                path,
                format!(
                    "shape mismatch: expected [rows, {want}], got {:?}",
                    array.shape
                ),
            ));
        }
    }
    Ok((array.data, r, c))
}

/// The bytes of a version-1.0 `'<f4'` C-order `.npy` file.
pub fn npy_bytes(data: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(Error::shape_because(
            "write_npy",
            shape,
            &[data.len()],
            "the shape's product must equal the number of elements",
        ));
    }
    let shape_text = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes `data` with `shape` as a float32 C-order `.npy` file, atomically. Errors if the
/// shape does not match the number of elements (nothing is written then).
pub fn write_npy(path: impl AsRef<Path>, data: &[f32], shape: &[usize]) -> Result<()> {
    let bytes = npy_bytes(data, shape)?;
    write_atomic(path, &bytes)
}
