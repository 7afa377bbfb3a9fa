//! Facts about this process: memory from `/proc/self/status` (Linux), pid,
//! version, platform, and the CPUs it may use (cgroup v2 `cpu.max`).

use std::path::Path;

/// Resident and peak resident memory, in bytes (0 where unknown).
pub fn memory() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `os-arch`, e.g. `linux-x86_64`.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The CPUs this process's cgroup may use (cgroup v2 `cpu.max`: quota over
/// period), the tightest along its path from `root`; `None` if unlimited
/// or unknown. `self_cgroup` is `/proc/self/cgroup`'s text.
pub fn cgroup_cpus(root: &Path, self_cgroup: &str) -> Option<f64> {
    let own = self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim().trim_start_matches('/');
    let mut dir = root.join(own);
    let mut tightest: Option<f64> = None;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max")) {
            let mut parts = text.split_whitespace();
            let quota = parts.next().and_then(|q| q.parse::<f64>().ok());
            let period = parts.next().and_then(|p| p.parse::<f64>().ok()).filter(|p| *p > 0.0);
            if let (Some(q), Some(p)) = (quota, period) {
                tightest = Some(tightest.map_or(q / p, |t| t.min(q / p)));
            }
        }
        if dir.as_path() == root || !dir.pop() || !dir.starts_with(root) {
            return tightest;
        }
    }
}

/// Workers for `workers = 0`: half the CPUs (the cgroup quota's, when it is
/// tighter than the cores), at least one. A sidecar shares them with its app.
pub fn default_workers(cores: usize, quota: Option<f64>) -> usize {
    let cpus = quota.map_or(cores as f64, |q| q.min(cores as f64));
    ((cpus / 2.0).floor() as usize).max(1)
}

/// [`default_workers`] for this process.
pub fn workers_here() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    default_workers(cores, cgroup_cpus(Path::new("/sys/fs/cgroup"), &own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_proc() {
        let (rss, peak) = memory();
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
    }

    #[test]
    fn workers_follow_the_tightest_cgroup_quota() {
        let root = std::env::temp_dir().join(format!("perfproxy-cgroup-{}", std::process::id()));
        let pod = root.join("kubepods/pod1");
        let app = pod.join("perfproxy");
        std::fs::create_dir_all(&app).expect("temp dir");
        std::fs::write(root.join("cpu.max"), "max 100000\n").expect("write");
        std::fs::write(pod.join("cpu.max"), "300000 100000\n").expect("write");
        std::fs::write(app.join("cpu.max"), "max 100000\n").expect("write");
        let own = "0::/kubepods/pod1/perfproxy\n";
        assert_eq!(cgroup_cpus(&root, own), Some(3.0), "the pod's quota of 3 CPUs");
        assert_eq!(default_workers(16, cgroup_cpus(&root, own)), 1, "half of 3 CPUs, rounded down");
        std::fs::write(app.join("cpu.max"), "800000 100000\n").expect("write");
        std::fs::write(pod.join("cpu.max"), "max 100000\n").expect("write");
        assert_eq!(default_workers(16, cgroup_cpus(&root, own)), 4, "8 CPUs of 16 cores");
        assert_eq!(default_workers(2, cgroup_cpus(&root, own)), 1, "the cores are tighter");
        assert_eq!(cgroup_cpus(&root, "0::/elsewhere\n"), None, "no cpu.max with a quota");
        assert_eq!(cgroup_cpus(&root, "1:cpu:/v1-only\n"), None, "cgroup v1: unknown");
        assert_eq!(default_workers(1, Some(0.5)), 1, "at least one");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
