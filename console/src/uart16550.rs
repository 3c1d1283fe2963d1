//! A 16550 UART driven by port I/O: the native console (QEMU's `-serial`).

use x86_64::instructions::port::Port;

/// The first PC serial port.
pub const COM1: u16 = 0x3f8;

const DATA: u16 = 0;
const INT_ENABLE: u16 = 1;
const FIFO_CTRL: u16 = 2;
const LINE_CTRL: u16 = 3;
const MODEM_CTRL: u16 = 4;
const LINE_STATUS: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LCR_DLAB: u8 = 1 << 7;
const LCR_8N1: u8 = 0x03;

pub struct Uart16550 {
    base: u16,
}

impl Uart16550 {
    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    ///
    /// # Safety
    /// A 16550 sits at `base`, we run with I/O privilege, and nothing else drives it.
    pub unsafe fn init(base: u16) -> Self {
        let out = |reg: u16, val: u8| {
            // SAFETY: the caller vouches that these ports belong to the UART.
            unsafe { Port::<u8>::new(base + reg).write(val) }
        };
        out(INT_ENABLE, 0);
        out(LINE_CTRL, LCR_DLAB);
        out(DATA, 1); // divisor 1: 115200 baud
        out(INT_ENABLE, 0);
        out(LINE_CTRL, LCR_8N1);
        out(FIFO_CTRL, 0xc7); // enable and clear FIFOs, 14-byte threshold
        out(MODEM_CTRL, 0x03); // DTR, RTS
        Uart16550 { base }
    }

    fn put(&mut self, byte: u8) {
        // SAFETY: `init`'s contract: the ports are the UART's and ours alone.
        unsafe {
            let mut status = Port::<u8>::new(self.base + LINE_STATUS);
            while status.read() & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            Port::<u8>::new(self.base + DATA).write(byte);
        }
    }

    /// Writes `bytes`, turning `\n` into `\r\n` as a serial terminal expects.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
    }
}
