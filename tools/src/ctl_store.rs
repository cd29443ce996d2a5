//! `switchboard ctl store inspect|compact`: the redb store file offline (the broker
//! stopped), without the admin API.

use std::path::Path;

use clap::Subcommand;
use switchboard_broker::store::Store;
use switchboard_broker::store::redb::RedbStore;

use crate::STORE_FILE;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Sessions, queue sizes and retained count.
    Inspect,
    /// Reclaim free space in the file.
    Compact,
}

/// Runs `ctl store COMMAND` on the store in `data_dir`.
pub fn run(command: StoreCommand, data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(STORE_FILE);
    anyhow::ensure!(path.exists(), "no store at {}", path.display());
    match command {
        StoreCommand::Inspect => {
            let store = RedbStore::open(&path, 0)?;
            let snap = store.load()?;
            println!("store: {}", path.display());
            println!("sessions: {}", snap.sessions.len());
            for (client_id, rec) in &snap.sessions {
                let queued = snap.queues.get(&rec.uid).map_or(0, Vec::len);
                let state = match rec.disconnected_at {
                    Some(t) => format!("offline since unix {t}"),
                    None => "was connected".into(),
                };
                let expiry = if rec.expiry == u32::MAX {
                    "never".to_owned()
                } else {
                    format!("{} s", rec.expiry)
                };
                println!(
                    "  {client_id}: {} subscriptions, {queued} queued, expiry {expiry}, {state}{}",
                    rec.subs.len(),
                    if rec.will.is_some() {
                        ", will pending"
                    } else {
                        ""
                    }
                );
            }
            println!(
                "queued deliveries: {}",
                snap.queues.values().map(Vec::len).sum::<usize>()
            );
            println!("retained messages: {}", snap.retained.len());
            println!("stored bytes: {}", store.stats().bytes);
        }
        StoreCommand::Compact => {
            let before = std::fs::metadata(&path)?.len();
            RedbStore::compact(&path)?;
            let after = std::fs::metadata(&path)?.len();
            println!("compacted {}: {before} -> {after} bytes", path.display());
        }
    }
    Ok(())
}
