//! What the agent knows of each local copy beyond the provider's data:
//! its generation (which the store compares with its own) and how long
//! each snapshot took. One small JSON file per volume, written atomically.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Record {
    generation: u64,
    #[serde(default)]
    took_ms: BTreeMap<String, u64>,
}

pub(super) struct Meta {
    dir: PathBuf,
}

impl Meta {
    pub fn new(dir: PathBuf) -> std::io::Result<Meta> {
        std::fs::create_dir_all(&dir)?;
        Ok(Meta { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn load(&self, id: &str) -> Option<Record> {
        let text = std::fs::read(self.path(id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn save(&self, id: &str, r: &Record) {
        let write = serde_json::to_vec(r)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::layout::write_atomic(&self.path(id), &b));
        if let Err(e) = write {
            tracing::warn!(volume = id, error = %e, "cannot persist the volume's generation");
        }
    }

    pub fn get(&self, id: &str) -> Option<u64> {
        self.load(id).map(|r| r.generation)
    }

    /// Persisted before the copy is used at this generation.
    pub fn set(&self, id: &str, generation: u64) -> std::io::Result<()> {
        let mut r = self.load(id).unwrap_or_default();
        r.generation = generation;
        let b = serde_json::to_vec(&r).map_err(std::io::Error::other)?;
        crate::layout::write_atomic(&self.path(id), &b)
    }

    pub fn remove(&self, id: &str) {
        let _ = std::fs::remove_file(self.path(id));
    }

    pub fn set_took(&self, id: &str, snapshot: &str, ms: u64) {
        if let Some(mut r) = self.load(id) {
            r.took_ms.insert(snapshot.to_owned(), ms);
            r.took_ms.retain(|k, _| !k.is_empty());
            self.save(id, &r);
        }
    }

    pub fn took(&self, id: &str, snapshot: &str) -> u64 {
        self.load(id)
            .and_then(|r| r.took_ms.get(snapshot).copied())
            .unwrap_or(0)
    }

    /// Every volume with a generation here.
    pub fn ids(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect()
    }
}
