//! Sequence numbers: how many units an exporter says it sent that never
//! arrived, robust to wrap-around, reordering and restarts.

/// A jump larger than this (either way) is a restart or a resync after an
/// outage, not loss: counting it would report billions of missing records.
const MAX_GAP: u32 = 1 << 24;
/// Backwards steps this small are late (reordered or duplicated) datagrams.
const REORDER_WINDOW: u32 = 1 << 16;

/// Sequence-number bookkeeping of one exporter scope. The unit (export
/// packets, data records, flows, datagrams) is the caller's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeqTrack {
    /// Sequence number the next datagram should carry.
    pub next: Option<u32>,
    pub gaps: u64,
    pub resets: u64,
}

impl SeqTrack {
    /// A datagram with sequence number `seq` covering `advance` units
    /// (`None` when unknown, e.g. data sets held for a template); returns
    /// the gap it revealed.
    pub fn observe(&mut self, seq: u32, advance: Option<u32>) -> u64 {
        let mut gap = 0;
        if let Some(next) = self.next {
            // Wrapping difference: 0xffff_fffe then 0x0000_0001 is a step
            // of 3, not a restart.
            let ahead = seq.wrapping_sub(next);
            let behind = next.wrapping_sub(seq);
            if ahead == 0 {
            } else if ahead <= MAX_GAP {
                gap = u64::from(ahead);
            } else if behind <= REORDER_WINDOW {
                // Late datagram: already counted as missing when its
                // successors came; keep expecting what we expected.
                return 0;
            } else {
                self.resets += 1;
            }
        }
        self.gaps += gap;
        self.next = advance.map(|a| seq.wrapping_add(a));
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_sequences_have_no_gaps() {
        let mut s = SeqTrack::default();
        assert_eq!(s.observe(100, Some(5)), 0);
        assert_eq!(s.observe(105, Some(1)), 0);
        assert_eq!(s.observe(106, Some(0)), 0);
        assert_eq!(s.observe(106, Some(3)), 0);
        assert_eq!((s.gaps, s.resets), (0, 0));
    }

    #[test]
    fn gaps_are_counted_in_units() {
        let mut s = SeqTrack::default();
        s.observe(10, Some(10));
        assert_eq!(s.observe(25, Some(10)), 5);
        assert_eq!(s.observe(45, Some(1)), 10);
        assert_eq!(s.gaps, 15);
    }

    #[test]
    fn wrap_around_is_not_a_restart() {
        let mut s = SeqTrack::default();
        s.observe(u32::MAX - 2, Some(2));
        assert_eq!(s.observe(u32::MAX, Some(1)), 0);
        assert_eq!(s.observe(0, Some(1)), 0);
        // 1 and 2 lost across nothing special.
        assert_eq!(s.observe(3, Some(1)), 2);
        let mut s = SeqTrack::default();
        s.observe(u32::MAX - 1, Some(1));
        // u32::MAX, 0 and 1 missing: the gap spans the wrap.
        assert_eq!(s.observe(2, Some(1)), 3);
        assert_eq!((s.gaps, s.resets), (3, 0));
    }

    #[test]
    fn restart_is_a_reset_not_four_billion_missing() {
        let mut s = SeqTrack::default();
        s.observe(3_000_000_000, Some(30));
        // Back to 0: forwards that is 1.29e9, backwards 3e9.
        assert_eq!(s.observe(0, Some(30)), 0);
        assert_eq!((s.gaps, s.resets), (0, 1));
        assert_eq!(s.observe(30, Some(30)), 0);
        // A restart from a small number.
        let mut s = SeqTrack::default();
        s.observe(5_000_000, Some(1));
        assert_eq!(s.observe(1, Some(1)), 0);
        assert_eq!((s.gaps, s.resets), (0, 1));
        assert_eq!(s.observe(3, Some(1)), 1);
    }

    #[test]
    fn late_datagrams_do_not_rewind() {
        let mut s = SeqTrack::default();
        s.observe(10, Some(1));
        assert_eq!(s.observe(13, Some(1)), 2);
        assert_eq!(s.observe(11, Some(1)), 0);
        assert_eq!(s.observe(14, Some(1)), 0);
        assert_eq!((s.gaps, s.resets), (2, 0));
    }

    #[test]
    fn unknown_advance_resyncs_without_a_gap() {
        let mut s = SeqTrack::default();
        s.observe(10, Some(1));
        assert_eq!(s.observe(11, None), 0);
        assert_eq!(s.observe(500, Some(1)), 0);
        assert_eq!(s.observe(502, Some(1)), 1);
    }
}
