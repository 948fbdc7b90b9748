//! Choosing GPUs: by NVML index or UUID (`--gpus 0,2` / `--gpus GPU-5f3c`), or as listed in
//! `CUDA_VISIBLE_DEVICES` when the user asks flinch to honour it.

/// One entry of a GPU list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuSelector {
    /// An NVML device index.
    Index(u32),
    /// A UUID, or a unique prefix of one (`GPU-5f3c`).
    Uuid(String),
}

fn parse_one(s: &str, what: &str) -> Result<GpuSelector, String> {
    let s = s.trim();
    if let Ok(i) = s.parse::<u32>() {
        return Ok(GpuSelector::Index(i));
    }
    if s.starts_with("GPU-") && s.len() > 4 {
        return Ok(GpuSelector::Uuid(s.to_owned()));
    }
    if s.starts_with("MIG-") {
        return Err(format!(
            "{what} entry {s:?} is a MIG instance: flinch measures whole GPUs; name the parent GPU instead"
        ));
    }
    Err(format!(
        "{what} entry {s:?} is neither a GPU index nor a UUID like GPU-5f3c..."
    ))
}

/// Parses `--gpus` entries.
pub fn parse_gpu_list(list: &[String]) -> Result<Vec<GpuSelector>, String> {
    if list.is_empty() {
        return Err("--gpus is empty: give indices or UUIDs, e.g. --gpus 0,1".into());
    }
    list.iter().map(|s| parse_one(s, "--gpus")).collect()
}

/// Parses the value of `CUDA_VISIBLE_DEVICES`. Like CUDA, an empty value means no GPU.
/// Indices are CUDA ordinals, which equal NVML indices only when `CUDA_DEVICE_ORDER` is
/// `PCI_BUS_ID`; the caller warns otherwise (UUIDs are always exact).
pub fn parse_cuda_visible_devices(value: &str) -> Result<Vec<GpuSelector>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|s| parse_one(s, "CUDA_VISIBLE_DEVICES"))
        .collect()
}

/// Resolves selectors against the devices present, given as (index, UUID). Order is kept,
/// duplicates dropped.
pub fn resolve(selectors: &[GpuSelector], devices: &[(u32, String)]) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    let present = || {
        devices
            .iter()
            .map(|(i, u)| format!("{i} ({u})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for sel in selectors {
        let idx = match sel {
            GpuSelector::Index(i) => {
                if !devices.iter().any(|(d, _)| d == i) {
                    return Err(format!("there is no GPU {i}; present: {}", present()));
                }
                *i
            }
            GpuSelector::Uuid(u) => {
                let hits: Vec<u32> = devices
                    .iter()
                    .filter(|(_, du)| {
                        du.eq_ignore_ascii_case(u)
                            || du.to_ascii_lowercase().starts_with(&u.to_ascii_lowercase())
                    })
                    .map(|(i, _)| *i)
                    .collect();
                match hits.as_slice() {
                    [i] => *i,
                    [] => return Err(format!("no GPU has UUID {u}; present: {}", present())),
                    _ => {
                        return Err(format!(
                            "UUID prefix {u} matches several GPUs; give more of it"
                        ));
                    }
                }
            }
        };
        if !out.contains(&idx) {
            out.push(idx);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devs() -> Vec<(u32, String)> {
        vec![
            (0, "GPU-aaaa1111".into()),
            (1, "GPU-bbbb2222".into()),
            (2, "GPU-aaab3333".into()),
        ]
    }

    #[test]
    fn indices_and_uuids_resolve_in_order_without_duplicates() {
        let sel = parse_gpu_list(&["2".into(), "GPU-bbbb".into(), "2".into()]).unwrap();
        assert_eq!(resolve(&sel, &devs()), Ok(vec![2, 1]));
        let sel = parse_gpu_list(&["gpu-AAAA1111".replace("gpu", "GPU")]).unwrap();
        assert_eq!(resolve(&sel, &devs()), Ok(vec![0]));
    }

    #[test]
    fn bad_selections_say_what_is_present() {
        let e = resolve(&[GpuSelector::Index(7)], &devs()).unwrap_err();
        assert!(
            e.contains("no GPU 7") && e.contains("1 (GPU-bbbb2222)"),
            "{e}"
        );
        let e = resolve(&[GpuSelector::Uuid("GPU-aaa".into())], &devs()).unwrap_err();
        assert!(e.contains("several"), "{e}");
        let e = resolve(&[GpuSelector::Uuid("GPU-ffff".into())], &devs()).unwrap_err();
        assert!(e.contains("no GPU has UUID"), "{e}");
        assert!(
            parse_gpu_list(&["fast".into()])
                .unwrap_err()
                .contains("neither")
        );
        assert!(parse_gpu_list(&[]).is_err());
    }

    #[test]
    fn cuda_visible_devices_follows_cuda() {
        assert_eq!(parse_cuda_visible_devices(""), Ok(vec![]));
        assert_eq!(
            parse_cuda_visible_devices("1, GPU-bbbb"),
            Ok(vec![
                GpuSelector::Index(1),
                GpuSelector::Uuid("GPU-bbbb".into())
            ])
        );
        assert!(
            parse_cuda_visible_devices("MIG-1234")
                .unwrap_err()
                .contains("MIG")
        );
        assert!(parse_cuda_visible_devices("0,x").is_err());
    }
}
