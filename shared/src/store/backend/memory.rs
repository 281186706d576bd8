//! A backend that keeps every object in memory, for unit tests that need a
//! repository but not a disk: it keeps the whole durability contract of
//! [`Backend`] except surviving the process.

use super::{Backend, ObjectInfo, ObjectKind};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// Each object's bytes and when it was written, by kind and name.
type Objects = BTreeMap<(ObjectKind, String), (Vec<u8>, SystemTime)>;

#[derive(Debug, Default)]
pub struct MemoryBackend {
    /// `None` until [`Backend::create`] (or the first put).
    objects: Mutex<Option<Objects>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn not_found(kind: ObjectKind, name: &str) -> Error {
        Error::storage(
            kind.path(name),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    }

    fn read<T>(
        &self,
        kind: ObjectKind,
        name: &str,
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        match objects
            .as_ref()
            .and_then(|o| o.get(&(kind, name.to_string())))
        {
            Some((data, _)) => f(data),
            None => Err(Self::not_found(kind, name)),
        }
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory:".to_string()
    }

    fn create(&self) -> Result<()> {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        match &*objects {
            Some(o) if o.contains_key(&(ObjectKind::Config, "config".to_string())) => {
                Err(Error::RepositoryExists {
                    location: self.location(),
                })
            }
            Some(o) if !o.is_empty() => Err(Error::Usage(
                "memory: is not empty; choose an empty location".into(),
            )),
            _ => {
                *objects = Some(BTreeMap::new());
                Ok(())
            }
        }
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let objects = objects.get_or_insert_with(BTreeMap::new);
        let key = (kind, name.to_string());
        if objects.contains_key(&key) {
            // Content-addressed names hold the same bytes: keep the first.
            // Config, key and lock names are claimed (as link(2) does).
            return match kind.claims_names() {
                true => Err(Error::storage(
                    kind.path(name),
                    std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                )),
                false => Ok(()),
            };
        }
        objects.insert(key, (data.to_vec(), SystemTime::now()));
        Ok(())
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.read(kind, name, |d| Ok(d.to_vec()))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read(kind, name, |d| {
            let end = offset.checked_add(len).filter(|&e| e <= d.len() as u64);
            match end {
                Some(end) => Ok(d[offset as usize..end as usize].to_vec()),
                None => Err(Error::storage(
                    kind.path(name),
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                )),
            }
        })
    }

    fn get_range_upto(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>> {
        self.read(kind, name, |d| {
            let start = (offset as usize).min(d.len());
            let end = (offset.saturating_add(max_len) as usize).min(d.len());
            Ok(d[start..end].to_vec())
        })
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        Ok(objects
            .iter()
            .flatten()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), (data, modified))| ObjectInfo {
                name: name.clone(),
                size: data.len() as u64,
                modified: Some(*modified),
            })
            .collect())
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = objects.as_mut() {
            o.remove(&(kind, name.to_string()));
        }
        Ok(())
    }
}
