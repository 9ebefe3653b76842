//! The parallel writer of one call's files: items whose files share a
//! directory are written in request order, one after the other; the other
//! groups run on up to [`WRITER_THREADS`] threads, so their fsyncs overlap.
//! Each item's files go through `common::apply` (lock, merge, atomic 0600
//! write); an item not started by the deadline is skipped with the rest of
//! its group. It records nothing and never logs a value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::apply::{self, FileOutcome, FileStatus, TargetFile};
use common::fsutil::FileSig;
use common::providers::Provider;

use super::error::InstallError;

pub(super) type FileJob = Option<(&'static dyn Provider, Vec<TargetFile>, common::Values)>;

/// Per file of an item: its outcome, and the signature of a file found
/// unchanged and private (`common::apply::write_files_noting`).
pub(super) type Outcomes = (Vec<FileOutcome>, Vec<Option<FileSig>>);

/// What became of one item's files in the blocking work.
pub(super) enum FileResult {
    /// The item has no files (or they were verified unchanged beforehand).
    None,
    Done(Result<Outcomes, InstallError>),
    /// Not started: the deadline had passed (nothing of it was written).
    Skipped,
}

/// Most threads the file jobs of one request run on.
const WRITER_THREADS: usize = 8;

/// Whether a job only compared files (all unchanged, or no files): it wrote
/// nothing, so no fsync.
fn only_compared(result: &FileResult) -> bool {
    match result {
        FileResult::None => true,
        FileResult::Done(Ok((outcomes, _))) => outcomes.iter().all(|o| {
            matches!(
                o.status,
                FileStatus::Unchanged
                    | FileStatus::WouldWrite
                    | FileStatus::Conflict
                    | FileStatus::Blocked
            )
        }),
        FileResult::Done(Err(_)) | FileResult::Skipped => false,
    }
}

/// Group jobs that share a directory, transitively (union-find over a map
/// from directory to the first job writing there: linear in the number of
/// files). Each group lists its jobs in request order; groups are ordered by
/// their first job.
fn group_by_dir(jobs: &[FileJob]) -> Vec<Vec<usize>> {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..jobs.len()).collect();
    let mut first: HashMap<PathBuf, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let dirs = job.iter().flat_map(|(_, files, _)| {
            files
                .iter()
                .filter_map(|f| f.path.path().parent().map(Path::to_path_buf))
        });
        for dir in dirs {
            let j = *first.entry(dir).or_insert(i);
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            if a != b {
                // The smaller index stays the root: groups keep request order.
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut index_of_root: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..jobs.len() {
        let r = root(&mut parent, i);
        let g = *index_of_root.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// Run the file jobs: jobs that share a directory run in request order, one
/// after the other; groups with no directory in common run on up to
/// [`WRITER_THREADS`] threads (their fsyncs overlap) once a group wrote:
/// files that are all unchanged (no write, no fsync) are compared on this
/// thread, without starting threads that would cost more than the work
/// (and, on a loaded node, without a clock deciding it). A job not started by
/// `deadline` is skipped, and so is every later job of its group. Results
/// come back in job order.
pub(super) fn write_all(
    jobs: Vec<FileJob>,
    overwrite: bool,
    dry_run: bool,
    deadline: Option<Instant>,
    item_delay: Option<Duration>,
) -> Vec<FileResult> {
    let run = |job: &FileJob| -> FileResult {
        let Some((provider, files, values)) = job.as_ref() else {
            return FileResult::None;
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return FileResult::Skipped;
        }
        if let Some(delay) = item_delay {
            std::thread::sleep(delay);
        }
        let done = if dry_run {
            apply::write_files(*provider, files, values, overwrite, true)
                .map(|outcomes| (outcomes, vec![]))
        } else {
            apply::write_files_noting(*provider, files, values, overwrite)
        };
        FileResult::Done(done.map_err(InstallError::from))
    };
    let groups = group_by_dir(&jobs);
    let run_group = |group: &[usize]| -> Vec<(usize, FileResult)> {
        let mut skipping = false;
        group
            .iter()
            .map(|&i| {
                let result = if skipping && jobs[i].is_some() {
                    FileResult::Skipped
                } else {
                    run(&jobs[i])
                };
                skipping |= matches!(result, FileResult::Skipped);
                (i, result)
            })
            .collect()
    };
    let mut results: Vec<Option<FileResult>> = (0..jobs.len()).map(|_| None).collect();
    // On this thread while nothing is written (no fsync to overlap); the
    // groups after the first that wrote (or failed, or was skipped) go to
    // the threads.
    let mut done: Vec<(usize, FileResult)> = vec![];
    let mut first = 0;
    let mut wrote = false;
    while first < groups.len() && !wrote {
        let ran = run_group(&groups[first]);
        wrote = !ran.iter().all(|(_, r)| only_compared(r));
        done.extend(ran);
        first += 1;
    }
    let threads = WRITER_THREADS.min(groups.len() - first);
    if threads > 0 {
        let next = AtomicUsize::new(first);
        done.extend(std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = vec![];
                        loop {
                            let g = next.fetch_add(1, Ordering::Relaxed);
                            let Some(group) = groups.get(g) else {
                                break out;
                            };
                            out.extend(run_group(group));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect::<Vec<_>>()
        }));
    }
    for (i, result) in done {
        results[i] = Some(result);
    }
    results
        .into_iter()
        .zip(&jobs)
        .map(|(result, job)| match (result, job) {
            (Some(result), _) => result,
            (None, None) => FileResult::None,
            (None, Some(_)) => {
                FileResult::Done(Err(InstallError::internal("a file writer thread panicked")))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(paths: &[&str]) -> FileJob {
        let files = paths
            .iter()
            .map(|p| TargetFile {
                display: (*p).to_owned(),
                path: common::fsutil::FileRef::anywhere(Path::new(p)).unwrap(),
            })
            .collect();
        let provider = common::providers::for_secret(None);
        Some((provider, files, common::Values::new()))
    }

    #[test]
    fn jobs_sharing_a_directory_are_grouped_transitively_in_request_order() {
        let jobs = vec![
            job(&["/h/a/1"]),
            job(&["/h/b/1"]),
            None,
            job(&["/h/c/1", "/h/a/2"]),
            job(&["/h/b/2"]),
            job(&["/h/d/1"]),
            job(&["/h/d/2", "/h/c/3"]),
        ];
        // a-c-d are one group through jobs 3 and 6; b is another.
        assert_eq!(
            group_by_dir(&jobs),
            vec![vec![0, 3, 5, 6], vec![1, 4], vec![2]]
        );
    }

    #[test]
    fn grouping_many_jobs_in_many_directories() {
        let paths: Vec<String> = (0..20_000).map(|i| format!("/h/d{i}/f")).collect();
        let jobs: Vec<FileJob> = paths.iter().map(|p| job(&[p.as_str()])).collect();
        let groups = group_by_dir(&jobs);
        assert_eq!(groups.len(), 20_000);
        assert!(groups.iter().enumerate().all(|(i, g)| g == &vec![i]));
    }
}
