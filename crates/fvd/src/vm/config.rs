//! A VM record as fv-vmm's JSON config.

use fv_rpc::Value;
use fv_xapi::error::codes;
use fv_xapi::ApiError;
use serde_json::json;

/// The command line a VM without `PV_args` boots with: the serial console fvd proxies,
/// and a panic that reboots (fv-vmm reports it; `actions_after_crash` decides).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

const MIB: i64 = 1 << 20;

fn field<'a>(record: &'a Value, name: &str) -> Option<&'a Value> {
    match record {
        Value::Struct(m) => m.get(name),
        _ => None,
    }
}

fn text(record: &Value, name: &str) -> String {
    field(record, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn int(record: &Value, name: &str) -> i64 {
    field(record, name).and_then(Value::as_int).unwrap_or(0)
}

fn not_allowed(why: String) -> ApiError {
    ApiError::new(&codes::OPERATION_NOT_ALLOWED, [why])
}

/// fv-vmm's config for the VM `record` (direct kernel boot from `PV_kernel`).
pub fn vmm_config(vm: &str, record: &Value) -> Result<serde_json::Value, ApiError> {
    let kernel = text(record, "PV_kernel");
    if kernel.is_empty() {
        return Err(not_allowed(format!(
            "VM {vm} has no PV_kernel: only direct kernel boot is supported"
        )));
    }
    let vcpus = int(record, "VCPUs_at_startup");
    if !(1..=32).contains(&vcpus) {
        return Err(not_allowed(format!(
            "VCPUs_at_startup is {vcpus}; a VM has 1 to 32 vCPUs"
        )));
    }
    let memory = int(record, "memory_static_max");
    // Whole MiB, rounded up; fv-vmm checks the range.
    let memory_mib = (memory + MIB - 1) / MIB;
    if memory_mib < 1 {
        return Err(not_allowed(format!("memory_static_max is {memory} bytes")));
    }
    let args = text(record, "PV_args");
    let mut config = json!({
        "kernel": kernel,
        "cmdline": if args.is_empty() { DEFAULT_CMDLINE.to_owned() } else { args },
        "vcpus": vcpus,
        "memory_mib": memory_mib,
    });
    let ramdisk = text(record, "PV_ramdisk");
    if !ramdisk.is_empty() {
        config["initrd"] = json!(ramdisk);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn record(pairs: &[(&str, Value)]) -> Value {
        Value::Struct(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn a_record_becomes_a_config() {
        let r = record(&[
            ("PV_kernel", "/boot/vmlinuz".into()),
            ("PV_ramdisk", "/boot/initrd".into()),
            ("PV_args", "".into()),
            ("VCPUs_at_startup", Value::Int(2)),
            ("memory_static_max", Value::Int(256 * MIB + 1)),
        ]);
        let c = vmm_config("OpaqueRef:x", &r).unwrap();
        assert_eq!(c["kernel"], "/boot/vmlinuz");
        assert_eq!(c["initrd"], "/boot/initrd");
        assert_eq!(c["cmdline"], DEFAULT_CMDLINE);
        assert_eq!(c["vcpus"], 2);
        assert_eq!(c["memory_mib"], 257);
    }

    #[test]
    fn records_that_cannot_boot_are_refused() {
        let base = [
            ("PV_kernel", Value::from("/k")),
            ("VCPUs_at_startup", Value::Int(1)),
            ("memory_static_max", Value::Int(64 * MIB)),
        ];
        for (field, bad) in [
            ("PV_kernel", Value::from("")),
            ("VCPUs_at_startup", Value::Int(0)),
            ("VCPUs_at_startup", Value::Int(33)),
            ("memory_static_max", Value::Int(0)),
        ] {
            let mut pairs = base.to_vec();
            pairs.retain(|(k, _)| *k != field);
            pairs.push((field, bad));
            let e = vmm_config("OpaqueRef:x", &record(&pairs)).unwrap_err();
            assert_eq!(e.code, "OPERATION_NOT_ALLOWED", "{field}");
        }
    }
}
