//! `app=blksum` and `app=blkfill`: whole-disk reads and writes that a host checks from the
//! outside (the rig compares with sha256sum of the image and with the regenerated pattern).

use super::pattern::fill_sector;
use crate::blk::{self, name, Disk};
use crate::cmdline::App;
use crate::println;
use crate::sha256::{self, Sha256};
use alloc::vec;
use blkfront::{BlkError, BlockDevice};

/// Bytes per request the apps issue (the driver splits them for the ring).
const CHUNK: u64 = 1 << 20;

/// Runs the app; returns whether it succeeded.
pub fn run(app: App, dev: Option<&str>, seed: u64) -> bool {
    let wanted = match dev {
        // The disks named, in that order, each waited for: a device model may write its
        // nodes only now.
        Some(list) => {
            let mut ids = vec![];
            for d in list.split(',') {
                match crate::vdev::id(d) {
                    Some(id) if blk::wait_for_disk(id) => ids.push(id),
                    _ => {
                        println!("app: no disk {d}");
                        return false;
                    }
                }
            }
            ids
        }
        // Reading every disk is harmless; filling one must be asked for by name.
        None if app == App::BlkSum => blk::disk_ids(),
        None => {
            println!("app: blkfill overwrites a disk: name it with dev=xvdX");
            return false;
        }
    };
    // Every disk gets its turn: one that fails says so and does not hide the others.
    wanted
        .into_iter()
        .map(|id| {
            let result = blk::connect(id).and_then(|mut disk| {
                let r = match app {
                    App::BlkSum => blksum(&mut disk, &name(id)),
                    App::BlkFill => blkfill(&mut disk, &name(id), seed),
                };
                // The app's own failure first: a close that then fails too (a backend that
                // broke the protocol may not let go) is logged by the driver.
                let closed = blk::close(disk);
                r.and(closed)
            });
            if let Err(e) = &result {
                println!("{} {}: {e}", app.name(), name(id));
            }
            result.is_ok()
        })
        .fold(true, |all, ok| all & ok)
}

fn blksum(disk: &mut Disk, dev: &str) -> Result<(), BlkError> {
    let info = disk.info();
    let total = info.capacity_bytes();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    while offset < total {
        let n = CHUNK.min(total - offset) as usize;
        disk.read(offset / 512, &mut buf[..n])?;
        hash.update(&buf[..n]);
        offset += n as u64;
        suspend_point(disk, "blksum", dev, offset)?;
        if let Some(what) = crate::xen::control::requested() {
            println!("blksum {dev} stopped by the toolstack ({what}) at sectors={}", offset / 512);
            return Ok(());
        }
    }
    println!(
        "blksum {dev} sectors={} sector_size={} sha256={}",
        info.sectors,
        info.sector_size,
        sha256::hex(&hash.finalize())
    );
    Ok(())
}

fn blkfill(disk: &mut Disk, dev: &str, seed: u64) -> Result<(), BlkError> {
    let info = disk.info();
    if info.read_only() {
        return Err(BlkError::ReadOnly);
    }
    let total = info.capacity_bytes();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    while offset < total {
        let n = CHUNK.min(total - offset) as usize;
        for (i, sector) in buf[..n].chunks_exact_mut(512).enumerate() {
            let s = offset / 512 + i as u64;
            fill_sector(seed, s, sector.try_into().expect("chunks_exact gives 512 bytes"));
        }
        disk.write(offset / 512, &buf[..n])?;
        offset += n as u64;
        // Only once the backend answered OK: the rig checks, after `xl destroy` in the middle
        // of the fill, that every sector up to the last such line holds the pattern.
        println!("blkfill {dev} acked sectors={} seed={seed}", offset / 512);
        suspend_point(disk, "blkfill", dev, offset)?;
        if let Some(what) = crate::xen::control::requested() {
            disk.flush()?;
            println!("blkfill {dev} stopped by the toolstack ({what}) at sectors={}", offset / 512);
            return Ok(());
        }
    }
    disk.flush()?;
    println!("blkfill {dev} done sectors={} seed={seed}", info.sectors);
    Ok(())
}

/// Between two requests (nothing in flight): suspends if the toolstack asked (`xl save`,
/// `xl migrate`), and in a new domain reconnects the disk before the app goes on, saying
/// `<app> <dev> resumed at sectors=<n>`.
fn suspend_point(disk: &mut Disk, app: &str, dev: &str, offset: u64) -> Result<(), BlkError> {
    if crate::xen::control::honour_suspend() == Some(true) {
        blk::resume(disk)?;
        println!("{app} {dev} resumed at sectors={}", offset / 512);
    }
    Ok(())
}
