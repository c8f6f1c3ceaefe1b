//! Named f32 tensors + string metadata in safetensors files, written atomically (temp file,
//! then rename) so an interrupted write never leaves a half file where a checkpoint was.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

/// Writes `bytes` to `path` through `path.tmp` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Serialises tensors (converted to f32 on the CPU) with `metadata`.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let mut bufs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let flat = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .reshape([-1]);
        let v = Vec::<f32>::try_from(&flat)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        bufs.push((
            name.clone(),
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        ));
    }
    let mut views = Vec::with_capacity(bufs.len());
    for (name, shape, bytes) in &bufs {
        views.push((
            name.clone(),
            TensorView::new(Dtype::F32, shape.clone(), bytes)?,
        ));
    }
    let bytes = safetensors::serialize(views, Some(metadata))?;
    write_atomic(path, &bytes)
}

/// Reads tensors (f32 only, CPU) and the metadata of a safetensors file.
pub fn load_tensors(
    path: &Path,
) -> anyhow::Result<(HashMap<String, String>, BTreeMap<String, Tensor>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not safetensors", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let raw = lorkd_checkpoint::f32_tensors(&bytes).with_context(|| path.display().to_string())?;
    Ok((meta, crate::checkpoint::to_torch(raw)))
}

/// The string metadata of a safetensors file (reads only its header).
pub fn load_tensors_metadata(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len);
    anyhow::ensure!(n <= 100 << 20, "{}: not safetensors", path.display());
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("{}: not safetensors", path.display()))?;
    Ok(v["__metadata__"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// Variables of a VarStore sorted by name (HashMap order would make files differ run to run).
pub fn sorted_variables(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Copies `tensors[name]` into every variable of `vs`; all must be present with their shape.
pub fn load_into(
    vs: &tch::nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
    what: &Path,
) -> anyhow::Result<()> {
    let vars = sorted_variables(vs);
    for (name, v) in &vars {
        let src = tensors
            .get(name)
            .with_context(|| format!("{}: tensor {name} missing", what.display()))?;
        anyhow::ensure!(
            src.size() == v.size(),
            "{}: tensor {name} has shape {:?}, expected {:?}",
            what.display(),
            src.size(),
            v.size()
        );
    }
    tch::no_grad(|| {
        for (name, mut v) in vars {
            v.copy_(&tensors[&name]);
        }
    });
    Ok(())
}
