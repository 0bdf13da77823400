//! Turns command-line inputs (files, globs, directories, hive-partitioned trees) into a sorted,
//! de-duplicated list of Parquet files.

use std::path::{Path, PathBuf};

use crate::error::InputError;

/// A value parsed from a hive partition directory name (`key=value`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HiveValue {
    /// The value parsed as an integer.
    Int(i64),
    /// Any other value, verbatim.
    Str(String),
}

/// One Parquet file to read, with the hive partition values found on its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    /// Path to the file.
    pub path: PathBuf,
    /// `key=value` directory components between the input root and the file, in path order.
    pub hive: Vec<(String, HiveValue)>,
}

/// Expands every input argument. Directories are searched recursively for `*.parquet` files
/// (hidden and `_`-prefixed entries such as `_SUCCESS` are skipped); `key=value` directory names
/// below the argument become hive partition values. Glob patterns are expanded by hardmine itself
/// (quote them so the shell does not). Each argument must yield at least one file.
pub fn discover(inputs: &[String]) -> Result<Vec<InputFile>, InputError> {
    if inputs.is_empty() {
        return Err(InputError::NoFiles {
            spec: "(no inputs)".into(),
            problem: "no dump was given".into(),
            fix: "pass Parquet files, globs or directories, e.g. `hardmine analyze dump/`".into(),
        });
    }
    let mut out: Vec<InputFile> = Vec::new();
    for spec in inputs {
        let path = Path::new(spec);
        let mut found = Vec::new();
        if path.is_dir() {
            walk(path, path, &mut found)?;
            if found.is_empty() {
                return Err(InputError::NoFiles {
                    spec: spec.clone(),
                    problem: "directory holds no *.parquet files".into(),
                    fix: "point at the directory your dumping code wrote, or at the files themselves".into(),
                });
            }
        } else if path.is_file() {
            found.push(InputFile { path: path.to_path_buf(), hive: Vec::new() });
        } else if is_glob(spec) {
            let paths = glob::glob(spec).map_err(|e| InputError::NoFiles {
                spec: spec.clone(),
                problem: format!("invalid glob pattern: {e}"),
                fix: "check the pattern's brackets and wildcards".into(),
            })?;
            // Hive values are read below the glob's literal prefix: `runs/*/x.parquet` finds
            // `level=3` in `runs/level=3/x.parquet`.
            let base = glob_base(spec);
            for entry in paths {
                let p = entry.map_err(|e| InputError::Io {
                    path: e.path().to_path_buf(),
                    source: std::io::Error::new(e.error().kind(), e.error().to_string()),
                })?;
                if p.is_dir() {
                    walk(&base, &p, &mut found)?;
                } else {
                    let hive = hive_values(&base, &p);
                    found.push(InputFile { path: p, hive });
                }
            }
            if found.is_empty() {
                return Err(InputError::NoFiles {
                    spec: spec.clone(),
                    problem: "glob matched no files".into(),
                    fix: "check the pattern (hardmine expands it itself; quote it so the shell does not)"
                        .into(),
                });
            }
        } else {
            return Err(InputError::NoFiles {
                spec: spec.clone(),
                problem: "no such file or directory".into(),
                fix: "check the path".into(),
            });
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        for f in found {
            if !out.iter().any(|o| o.path == f.path) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

fn is_glob(spec: &str) -> bool {
    spec.contains(['*', '?', '['])
}

/// The directory part of a glob before its first wildcard component.
fn glob_base(spec: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for comp in Path::new(spec).components() {
        if comp.as_os_str().to_str().is_some_and(is_glob) {
            break;
        }
        base.push(comp);
    }
    base
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<InputFile>) -> Result<(), InputError> {
    let io = |source| InputError::Io { path: dir.to_path_buf(), source };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for p in entries {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            // Skipping it would silently leave data out of the analysis.
            let lossy = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if lossy.ends_with(".parquet") || lossy.ends_with(".pq") || p.is_dir() {
                return Err(InputError::NoFiles {
                    spec: p.display().to_string(),
                    problem: "the name is not valid UTF-8, so hardmine cannot name it in reports".into(),
                    fix: "rename it with UTF-8 characters (e.g. `convmv -f latin1 -t utf8 --notest`)".into(),
                });
            }
            continue;
        };
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, found)?;
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            let hive = hive_values(root, &p);
            found.push(InputFile { path: p, hive });
        }
    }
    Ok(())
}

/// `key=value` components of the directories between `root` and `file`.
fn hive_values(root: &Path, file: &Path) -> Vec<(String, HiveValue)> {
    let Ok(rel) = file.strip_prefix(root) else { return Vec::new() };
    let mut out = Vec::new();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for comp in parent.components() {
        let Some(s) = comp.as_os_str().to_str() else { continue };
        if let Some((k, v)) = s.split_once('=') {
            if k.is_empty() {
                continue;
            }
            let value = match v.parse::<i64>() {
                Ok(i) => HiveValue::Int(i),
                Err(_) => HiveValue::Str(v.to_string()),
            };
            out.push((k.to_string(), value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_components_become_partition_values() {
        let v = hive_values(Path::new("/d"), Path::new("/d/split=train/level=3/part-0.parquet"));
        assert_eq!(
            v,
            vec![
                ("split".to_string(), HiveValue::Str("train".into())),
                ("level".to_string(), HiveValue::Int(3))
            ]
        );
        assert!(hive_values(Path::new("/d"), Path::new("/d/x.parquet")).is_empty());
    }

    #[test]
    fn glob_bases_stop_at_the_first_wildcard() {
        assert_eq!(glob_base("runs/*/part.parquet"), PathBuf::from("runs"));
        assert_eq!(glob_base("/a/b/x-*.parquet"), PathBuf::from("/a/b"));
        assert_eq!(glob_base("*.parquet"), PathBuf::from(""));
    }

    #[test]
    fn directories_are_walked_in_sorted_order_skipping_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("level=4")).unwrap();
        std::fs::create_dir_all(d.join("level=3")).unwrap();
        for p in
            ["level=4/b.parquet", "level=3/a.parquet", "level=3/_SUCCESS", ".hidden.parquet", "notes.txt"]
        {
            std::fs::write(d.join(p), b"").unwrap();
        }
        let files = discover(&[d.display().to_string()]).unwrap();
        let names: Vec<_> =
            files.iter().map(|f| f.path.strip_prefix(d).unwrap().display().to_string()).collect();
        assert_eq!(names, vec!["level=3/a.parquet", "level=4/b.parquet"]);
        assert_eq!(files[1].hive, vec![("level".to_string(), HiveValue::Int(4))]);
    }

    #[test]
    fn empty_directories_globs_and_missing_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        assert!(discover(std::slice::from_ref(&d)).unwrap_err().to_string().contains("no *.parquet"));
        assert!(discover(&[format!("{d}/*.parquet")]).unwrap_err().to_string().contains("matched no files"));
        assert!(discover(&[format!("{d}/nope.parquet")]).unwrap_err().to_string().contains("no such file"));
        // A file whose name is not UTF-8 is an error, not silently left out.
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"img\xff<b>|.parquet"));
            std::fs::write(&bad, b"x").unwrap();
            let e = discover(std::slice::from_ref(&d)).unwrap_err().to_string();
            assert!(e.contains("not valid UTF-8") && e.contains("rename"), "{e}");
        }
        assert!(discover(&[]).is_err());
    }
}
