//! A spin lock that also masks interrupts (events) while held, so that a handler cannot
//! spin forever on a lock the code it interrupted holds. Under Xen a waiter that has spun a
//! while blocks until the holder lets go ([`crate::xen::pvlock`]).

use crate::pvops::{irq_save, IrqGuard};
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicU32, Ordering};

/// Tries before a waiter blocks: a lock held for a short stretch is taken by spinning.
const SPINS_BEFORE_BLOCKING: u32 = 1 << 12;

pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
    /// vCPUs blocked waiting for it, whom an unlock must kick.
    waiters: AtomicU32,
}

/// Interrupts are restored after the lock is released (in `drop`).
pub struct IrqMutexGuard<'a, T> {
    guard: ManuallyDrop<spin::MutexGuard<'a, T>>,
    lock: &'a IrqMutex<T>,
    _irq: IrqGuard,
}

impl<T> IrqMutex<T> {
    pub const fn new(value: T) -> Self {
        IrqMutex { inner: spin::Mutex::new(value), waiters: AtomicU32::new(0) }
    }

    pub fn lock(&self) -> IrqMutexGuard<'_, T> {
        let irq = irq_save();
        let guard = match self.inner.try_lock() {
            Some(guard) => guard,
            None => self.lock_contended(),
        };
        IrqMutexGuard { guard: ManuallyDrop::new(guard), lock: self, _irq: irq }
    }

    #[cold]
    fn lock_contended(&self) -> spin::MutexGuard<'_, T> {
        for _ in 0..SPINS_BEFORE_BLOCKING {
            core::hint::spin_loop();
            if let Some(guard) = self.inner.try_lock() {
                return guard;
            }
        }
        let id = self as *const Self as usize;
        crate::xen::pvlock::lock_blocking(id, &self.waiters, || self.inner.try_lock())
            .unwrap_or_else(|| self.inner.lock())
    }

    /// For the last words of a dying kernel: takes the lock even if its holder never lets
    /// go. The holder may be the code this CPU interrupted, which will never run again, or
    /// another CPU in the middle of its own output: that one gets a while to finish (a vCPU
    /// may be descheduled mid-line) before the lock is taken from it.
    pub fn lock_for_crash(&self) -> IrqMutexGuard<'_, T> {
        /// About 10-100 ms of `pause`: longer than any one console write.
        const PATIENCE: u32 = 10_000_000;
        let irq = irq_save();
        for _ in 0..PATIENCE {
            if let Some(guard) = self.inner.try_lock() {
                return IrqMutexGuard { guard: ManuallyDrop::new(guard), lock: self, _irq: irq };
            }
            core::hint::spin_loop();
        }
        // SAFETY: see above: the holder was interrupted for good, or has held the lock far
        // longer than any use of it takes; what it writes after this may interleave with
        // our last words, which is the price of getting them out at all.
        unsafe { self.inner.force_unlock() };
        IrqMutexGuard { guard: ManuallyDrop::new(self.inner.lock()), lock: self, _irq: irq }
    }
}

impl<T> Drop for IrqMutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard is dropped here once and never touched again.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        if self.lock.waiters.load(Ordering::Relaxed) != 0 {
            crate::xen::pvlock::kick(self.lock as *const IrqMutex<T> as usize);
        }
    }
}

impl<T> core::ops::Deref for IrqMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> core::ops::DerefMut for IrqMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}
