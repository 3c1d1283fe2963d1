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

    /// For the last words of a dying kernel: takes the lock even if the code we interrupted
    /// holds it (one CPU, so that code will never run again).
    pub fn lock_for_crash(&self) -> IrqMutexGuard<'_, T> {
        let irq = irq_save();
        if self.inner.is_locked() {
            // SAFETY: see above: the holder was interrupted for good.
            unsafe { self.inner.force_unlock() };
        }
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
