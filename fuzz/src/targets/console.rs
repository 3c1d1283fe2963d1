//! The PV console ring. The guest only writes to it (it reads no console input), so what
//! xenconsoled controls is the `out` ring's consumer index: any value, at any time, while
//! the guest writes more than the ring holds.

use std::sync::atomic::{AtomicU32, Ordering};

use console::xen_ring::{Doorbell, Error, Stalled, XenRing, OUT};

use crate::input::{Input, Script};

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// xenconsoled: each wait runs one step of the script on the consumer index.
struct Backend<'a> {
    script: Input<'a>,
    cons: &'a AtomicU32,
    prod: &'a AtomicU32,
}

impl Doorbell for Backend<'_> {
    fn notify(&mut self) {}

    fn wait(&mut self) -> Result<(), Stalled> {
        if self.script.is_empty() {
            return Err(Stalled);
        }
        let cons = self.cons.load(Ordering::Relaxed);
        let prod = self.prod.load(Ordering::Relaxed);
        let next = match self.script.u8() % 4 {
            // Honest: consume some of what is there.
            0 => cons.wrapping_add(u32::from(self.script.u16()) % (prod.wrapping_sub(cons) + 1)),
            // A little ahead or behind.
            1 => cons.wrapping_add(i32::from(self.script.u16() as i16) as u32),
            // Anything at all.
            2 => self.script.u32(),
            // Consume nothing.
            _ => cons,
        };
        self.cons.store(next, Ordering::Release);
        Ok(())
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut page = Box::new(Page([0; 4096]));
    let base = page.0.as_mut_ptr();
    // SAFETY: indices of the console page, 4-aligned within the live boxed page; every
    // access to them, here and in ring::byte, is atomic.
    let index = |off: usize| unsafe { &*base.add(off).cast::<AtomicU32>() };
    let (cons, prod) = (index(OUT.cons), index(OUT.prod));
    // Where the indices stand when the guest connects: anything.
    let start = input.u32();
    cons.store(start.wrapping_add(u32::from(input.u8())), Ordering::Relaxed);
    prod.store(start, Ordering::Relaxed);
    let len = 1 + usize::from(input.u16()) % (4 * OUT.size as usize);
    // SAFETY: the page outlives the ring; this is its only producer.
    let mut ring = unsafe { XenRing::new(base) };
    let mut backend = Backend { script: input, cons, prod };
    let bytes = vec![b'x'; len];
    // Each round writes or waits, and each wait takes script bytes: the loop ends.
    while !backend.script.is_empty() {
        match ring.write_all(&bytes, &mut backend) {
            Ok(()) | Err(Error::Stalled { .. }) => {}
            // The guest stops using a ring it found corrupt.
            Err(Error::Ring(_)) => return,
        }
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let honest = (0..20).fold(Script::default().u32(0).u8(0).u16(5000), |s, _| s.u8(0).u16(700));
    let wrapping = Script::default().u32(u32::MAX - 100).u8(0).u16(3000).u8(0).u16(2048).u8(3);
    let hostile = Script::default().u32(7).u8(9).u16(100).u8(1).u16(0xff00).u8(2).u32(1 << 31);
    vec![honest.0, wrapping.0, hostile.0]
}
