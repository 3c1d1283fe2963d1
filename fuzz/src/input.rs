//! Reading a fuzz input as a script: every read succeeds, yielding zeros once the input is
//! used up, so any byte string is a valid script and the mutations all land somewhere.

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes, fewer at the end of the input.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length byte, then that many bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = self.u8();
        self.bytes(n.into())
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// One of `items`, which must not be empty.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }
}

/// Builds an input for [`Input`] to read back: the targets' seeds.
#[derive(Default)]
pub struct Script(pub Vec<u8>);

impl Script {
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }

    /// A [`Input::chunk`]: at most 255 bytes.
    pub fn chunk(mut self, bytes: &[u8]) -> Self {
        let n = bytes.len().min(255);
        self.0.push(n as u8);
        self.0.extend_from_slice(&bytes[..n]);
        self
    }

    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zeros() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.u16(), 0x0201);
        assert_eq!(i.u32(), 3);
        assert!(i.is_empty());
        assert_eq!((i.u8(), i.chunk()), (0, &[][..]));
    }

    #[test]
    fn scripts_read_back() {
        let s = Script::default().u8(7).u16(0x1234).u32(5).u64(6).chunk(b"abc").bytes(b"z");
        let mut i = Input::new(&s.0);
        assert_eq!((i.u8(), i.u16(), i.u32(), i.u64()), (7, 0x1234, 5, 6));
        assert_eq!(i.chunk(), b"abc");
        assert_eq!(i.pick(&['x', 'y', 'z']), 'z'); // b'z' = 122, 122 % 3 = 2
    }
}
