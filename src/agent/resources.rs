//! What a host offers: `cpu` and `mem` (minus reserves for the host itself), and
//! `cuda.device` from NVIDIA GPUs found through NVML at run time (no build-time CUDA), or
//! from a configured number of mock devices so GPU scheduling can be tested without a GPU.
//!
//! Devices are handed out whole by [`DeviceAllocMap`], under one lock, so concurrent kernel
//! creations can never share or leak a device.

use super::AgentError;
use crate::domain::ResourceSlots;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The slot name of CUDA devices.
pub const CUDA_SLOT: &str = "cuda.device";

/// A GPU as NVML describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_bytes: u64,
}

/// Where the devices of the `cuda.device` slot come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSource {
    Nvidia(Vec<GpuInfo>),
    Mock(u32),
}

impl DeviceSource {
    pub fn ids(&self) -> Vec<String> {
        match self {
            DeviceSource::Nvidia(gpus) => gpus.iter().map(|g| g.index.to_string()).collect(),
            DeviceSource::Mock(n) => (0..*n).map(|i| format!("mock{i}")).collect(),
        }
    }
}

/// CPU cores and memory bytes of this host, minus what is reserved for the host.
pub fn host_slots(reserved_cpu: u32, reserved_mem: u64) -> ResourceSlots {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let cpu = cpus.saturating_sub(reserved_cpu).max(1);
    let mem = meminfo_total().unwrap_or(0).saturating_sub(reserved_mem);
    let mut s = ResourceSlots::new();
    s.set("cpu", Decimal::from(cpu));
    s.set("mem", Decimal::from(mem));
    s
}

fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// NVIDIA GPUs through NVML (`libnvidia-ml.so.1`), loaded at run time. An error says why
/// none were found (no driver, no library, NVML failure).
pub fn detect_nvidia() -> Result<Vec<GpuInfo>, String> {
    use libloading::{Library, Symbol};
    use std::os::raw::{c_char, c_int, c_uint, c_void};
    #[repr(C)]
    struct NvmlMemory {
        total: u64,
        free: u64,
        used: u64,
    }
    type Device = *mut c_void;
    // SAFETY: NVML's documented C ABI; every pointer passed points to a live local buffer of
    // the stated size, and the library stays loaded while its symbols are used.
    unsafe {
        let lib = Library::new("libnvidia-ml.so.1")
            .or_else(|_| Library::new("libnvidia-ml.so"))
            .map_err(|e| format!("NVML is not available ({e})"))?;
        let init: Symbol<unsafe extern "C" fn() -> c_int> =
            lib.get(b"nvmlInit_v2\0").map_err(|e| e.to_string())?;
        let shutdown: Symbol<unsafe extern "C" fn() -> c_int> =
            lib.get(b"nvmlShutdown\0").map_err(|e| e.to_string())?;
        let count: Symbol<unsafe extern "C" fn(*mut c_uint) -> c_int> = lib
            .get(b"nvmlDeviceGetCount_v2\0")
            .map_err(|e| e.to_string())?;
        let by_index: Symbol<unsafe extern "C" fn(c_uint, *mut Device) -> c_int> = lib
            .get(b"nvmlDeviceGetHandleByIndex_v2\0")
            .map_err(|e| e.to_string())?;
        let get_name: Symbol<unsafe extern "C" fn(Device, *mut c_char, c_uint) -> c_int> =
            lib.get(b"nvmlDeviceGetName\0").map_err(|e| e.to_string())?;
        let get_uuid: Symbol<unsafe extern "C" fn(Device, *mut c_char, c_uint) -> c_int> =
            lib.get(b"nvmlDeviceGetUUID\0").map_err(|e| e.to_string())?;
        let get_mem: Symbol<unsafe extern "C" fn(Device, *mut NvmlMemory) -> c_int> = lib
            .get(b"nvmlDeviceGetMemoryInfo\0")
            .map_err(|e| e.to_string())?;
        let rc = init();
        if rc != 0 {
            return Err(format!("nvmlInit failed with code {rc}"));
        }
        let text = |buf: &[c_char]| {
            let bytes: Vec<u8> = buf
                .iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let mut n: c_uint = 0;
        let mut gpus = Vec::new();
        let rc = count(&mut n);
        if rc == 0 {
            for i in 0..n {
                let mut dev: Device = std::ptr::null_mut();
                if by_index(i, &mut dev) != 0 {
                    continue;
                }
                let mut name = [0 as c_char; 96];
                let mut uuid = [0 as c_char; 96];
                let mut mem = NvmlMemory {
                    total: 0,
                    free: 0,
                    used: 0,
                };
                let _ = get_name(dev, name.as_mut_ptr(), name.len() as c_uint);
                let _ = get_uuid(dev, uuid.as_mut_ptr(), uuid.len() as c_uint);
                let _ = get_mem(dev, &mut mem);
                gpus.push(GpuInfo {
                    index: i,
                    uuid: text(&uuid),
                    name: text(&name),
                    memory_bytes: mem.total,
                });
            }
        }
        shutdown();
        if rc != 0 {
            return Err(format!("nvmlDeviceGetCount failed with code {rc}"));
        }
        Ok(gpus)
    }
}

/// Whole devices handed to kernels.
pub struct DeviceAllocMap {
    pub source: DeviceSource,
    /// device id → the kernel holding it.
    used: Mutex<BTreeMap<String, Option<String>>>,
}

impl DeviceAllocMap {
    pub fn new(source: DeviceSource) -> Self {
        let used = source.ids().into_iter().map(|d| (d, None)).collect();
        DeviceAllocMap {
            source,
            used: Mutex::new(used),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.lock().len()
    }

    pub fn free(&self) -> usize {
        self.lock().values().filter(|k| k.is_none()).count()
    }

    /// Takes `count` whole devices for `kernel` (all or none).
    pub fn allocate(&self, kernel: &str, count: Decimal) -> Result<Vec<String>, AgentError> {
        if count.fract() != Decimal::ZERO || count.is_sign_negative() {
            return Err(AgentError::InvalidInput(format!(
                "{CUDA_SLOT} must be a whole number of devices, not {count}"
            )));
        }
        let want = rust_decimal::prelude::ToPrimitive::to_usize(&count).unwrap_or(usize::MAX);
        let mut used = self.lock();
        let free: Vec<String> = used
            .iter()
            .filter(|(_, k)| k.is_none())
            .map(|(d, _)| d.clone())
            .take(want)
            .collect();
        if free.len() < want {
            return Err(AgentError::InvalidInput(format!(
                "insufficient {CUDA_SLOT}: {want} requested, {} free of {}",
                used.values().filter(|k| k.is_none()).count(),
                used.len()
            )));
        }
        for d in &free {
            used.insert(d.clone(), Some(kernel.to_owned()));
        }
        Ok(free)
    }

    /// Gives back everything `kernel` holds; releasing twice is harmless.
    pub fn release(&self, kernel: &str) {
        for holder in self.lock().values_mut() {
            if holder.as_deref() == Some(kernel) {
                *holder = None;
            }
        }
    }

    /// Marks devices as held again after an agent restart.
    pub fn restore(&self, kernel: &str, devices: &[String]) {
        let mut used = self.lock();
        for d in devices {
            if let Some(holder) = used.get_mut(d) {
                *holder = Some(kernel.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn host_slots_are_positive_and_reserves_apply() {
        let all = host_slots(0, 0);
        assert!(all.get("cpu") >= Decimal::ONE);
        assert!(all.get("mem") > Decimal::from(1 << 20));
        let reserved = host_slots(0, 1 << 30);
        assert_eq!(
            all.get("mem") - reserved.get("mem"),
            Decimal::from(1u64 << 30)
        );
    }

    #[test]
    fn nvidia_detection_explains_why_there_are_none() {
        // Hosts without a driver get a reason, never a crash; hosts with one get devices.
        match detect_nvidia() {
            Ok(gpus) => assert!(gpus.iter().all(|g| !g.uuid.is_empty())),
            Err(why) => assert!(!why.is_empty()),
        }
    }

    #[test]
    fn devices_are_allocated_whole_and_never_shared_under_contention() {
        let map = Arc::new(DeviceAllocMap::new(DeviceSource::Mock(4)));
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let map = map.clone();
                std::thread::spawn(move || {
                    map.allocate(&format!("k{i}"), Decimal::ONE)
                        .ok()
                        .map(|d| (i, d))
                })
            })
            .collect();
        let got: Vec<_> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(got.len(), 4);
        let mut devices: Vec<String> = got.iter().flat_map(|(_, d)| d.clone()).collect();
        devices.sort();
        devices.dedup();
        assert_eq!(devices.len(), 4, "no device handed out twice");
        assert_eq!(map.free(), 0);
        for (i, _) in &got {
            map.release(&format!("k{i}"));
            map.release(&format!("k{i}"));
        }
        assert_eq!(map.free(), 4);
        assert!(
            map.allocate("x", Decimal::new(5, 1)).is_err(),
            "fractions of a device are refused"
        );
        assert!(map.allocate("x", Decimal::from(5)).is_err());
        assert_eq!(map.free(), 4, "a refused allocation takes nothing");
        map.restore("y", &["mock1".into()]);
        assert_eq!(map.free(), 3);
    }
}
