//! Golden files: compare a rendering with the file that pins it, or rewrite the file with
//! `UPDATE_GOLDEN=1`; and check that every fixture directory is listed as a test.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

/// Declares `CASES` and one `#[test]` per case (`test_name => "directory"`) that calls the
/// test file's own `check(directory)`.
#[allow(unused_macros)] // used by the golden test binaries only
macro_rules! golden {
    ($($name:ident => $dir:literal),* $(,)?) => {
        const CASES: &[&str] = &[$($dir),*];
        $(
            #[test]
            fn $name() {
                check($dir);
            }
        )*
    };
}

/// Compares `actual` with the golden file at `path` (rewrites it under `UPDATE_GOLDEN=1`);
/// on a difference, panics naming the first differing line and how to regenerate (`rerun`).
pub fn compare(path: &Path, actual: &str, rerun: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(path, actual).expect("golden file is writable");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs at line {}\n--- expected: {:?}\n+++ actual:   {:?}\n\
             run `UPDATE_GOLDEN=1 {rerun}` and review the diff",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
        );
    }
}

/// Asserts that the case directories under `dir` are exactly `listed`, so none is skipped.
pub fn assert_every_case_listed(dir: &Path, listed: &[&str]) {
    let mut dirs: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = listed.iter().map(|c| (*c).to_owned()).collect();
    listed.sort();
    assert_eq!(dirs, listed);
}
