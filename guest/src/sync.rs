//! A spin lock that also masks interrupts (events) while held, so that a handler cannot
//! spin forever on a lock the code it interrupted holds.

use crate::pvops::{irq_save, IrqGuard};

pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// Field order matters: the lock is released before interrupts are restored.
pub struct IrqMutexGuard<'a, T> {
    guard: spin::MutexGuard<'a, T>,
    _irq: IrqGuard,
}

impl<T> IrqMutex<T> {
    pub const fn new(value: T) -> Self {
        IrqMutex { inner: spin::Mutex::new(value) }
    }

    pub fn lock(&self) -> IrqMutexGuard<'_, T> {
        let irq = irq_save();
        IrqMutexGuard { guard: self.inner.lock(), _irq: irq }
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
                return IrqMutexGuard { guard, _irq: irq };
            }
            core::hint::spin_loop();
        }
        // SAFETY: see above: the holder was interrupted for good, or has held the lock far
        // longer than any use of it takes; what it writes after this may interleave with
        // our last words, which is the price of getting them out at all.
        unsafe { self.inner.force_unlock() };
        IrqMutexGuard { guard: self.inner.lock(), _irq: irq }
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
