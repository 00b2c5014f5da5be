//! An MC146818 CMOS RTC at ports 0x70 (index, bit 7 masks NMI) and 0x71 (data).
//!
//! The clock is the host's UTC clock plus an offset the guest sets by writing the time
//! registers; it is computed on each read, so nothing ticks. There are no RTC interrupts
//! (register C never reports one). The memory-size registers firmware and Linux read are
//! filled from the guest's memory size.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::arch::layout;
use crate::devices::bus::BusDevice;

const INDEX_PORT: u64 = 0;
const DATA_PORT: u64 = 1;
const INDEX_MASK: u8 = 0x7f;
const NMI_DISABLE: u8 = 0x80;

// Clock registers.
const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
/// Century, where the FADT's `century` field says it is.
const CENTURY: u8 = 0x32;
const TIME_REGS: [u8; 7] = [
    SECONDS,
    MINUTES,
    HOURS,
    DAY_OF_WEEK,
    DAY_OF_MONTH,
    MONTH,
    YEAR,
];

// Status registers.
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Update in progress: never set, since our registers never change under a reader.
const REG_A_UIP: u8 = 0x80;
/// 32.768 kHz time base, 1024 Hz periodic rate: what BIOSes program.
const REG_A_DEFAULT: u8 = 0x26;
/// SET: the guest is writing the time; the registers hold still until it clears the bit.
const REG_B_SET: u8 = 0x80;
/// DM: binary rather than BCD values.
const REG_B_BINARY: u8 = 0x04;
/// 24-hour rather than 12-hour (bit 7 = PM) hours.
const REG_B_24H: u8 = 0x02;
const REG_B_DEFAULT: u8 = REG_B_24H;
/// Valid RAM and time: the battery is fine.
const REG_D_VRT: u8 = 0x80;
const HOUR_PM: u8 = 0x80;

// Memory-size registers.
const BASE_MEM_KIB_LO: u8 = 0x15;
const EXT_MEM_KIB_LO: u8 = 0x17;
const EXT_MEM_KIB_LO_2: u8 = 0x30;
const MEM_ABOVE_16M_LO: u8 = 0x34;
const MEM_ABOVE_4G_LO: u8 = 0x5b;
const BASE_MEM_KIB: u64 = 640;

const MIB: u64 = 1 << 20;
const UNIT_64K: u32 = 16;

/// A UTC calendar date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 0 = Sunday .. 6 = Saturday
    pub weekday: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl DateTime {
    /// The calendar time `secs` seconds after the Unix epoch (negative: before it).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        // Inverse of days_from_civil: shift to an era starting 0000-03-01.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // Every narrowed value is bounded by the arithmetic above (day <= 31, hour < 24...).
        DateTime {
            year,
            month: month as u8,
            day: day as u8,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            weekday: (days + 4).rem_euclid(7) as u8,
        }
    }

    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0xf);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

pub struct Cmos {
    index: u8,
    nmi_disabled: bool,
    regs: [u8; 128],
    /// Seconds the guest's clock runs ahead of the host's.
    offset_secs: i64,
    clock: fn() -> i64,
}

impl Cmos {
    /// A CMOS for a guest with `mem_bytes` of RAM laid out by `layout::ram_regions`.
    pub fn new(mem_bytes: u64) -> Self {
        Self::with_clock(mem_bytes, host_now)
    }

    /// As `new`, reading Unix time from `clock` instead of the host's clock.
    pub fn with_clock(mem_bytes: u64, clock: fn() -> i64) -> Self {
        let mut regs = [0u8; 128];
        regs[usize::from(REG_A)] = REG_A_DEFAULT;
        regs[usize::from(REG_B)] = REG_B_DEFAULT;
        regs[usize::from(REG_D)] = REG_D_VRT;

        let (mut below_4g, mut above_4g) = (0u64, 0u64);
        for (start, len) in layout::ram_regions(mem_bytes) {
            if start < layout::MMIO_HOLE_END {
                below_4g += len;
            } else {
                above_4g += len;
            }
        }
        let mut put = |reg: u8, value: u64, bytes: usize| {
            let le = value.to_le_bytes();
            let at = usize::from(reg);
            regs[at..at + bytes].copy_from_slice(&le[..bytes]);
        };
        put(BASE_MEM_KIB_LO, BASE_MEM_KIB, 2);
        let ext_kib = (below_4g.saturating_sub(MIB) / 1024).min(0xffff);
        put(EXT_MEM_KIB_LO, ext_kib, 2);
        put(EXT_MEM_KIB_LO_2, ext_kib, 2);
        let above_16m = (below_4g.saturating_sub(16 * MIB) >> UNIT_64K).min(0xffff);
        put(MEM_ABOVE_16M_LO, above_16m, 2);
        put(MEM_ABOVE_4G_LO, (above_4g >> UNIT_64K).min(0xff_ffff), 3);

        Cmos {
            index: 0,
            nmi_disabled: false,
            regs,
            offset_secs: 0,
            clock,
        }
    }

    /// Whether the guest last masked NMIs through bit 7 of the index port.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    fn reg(&self, r: u8) -> u8 {
        self.regs[usize::from(r & INDEX_MASK)]
    }

    fn set_reg(&mut self, r: u8, v: u8) {
        self.regs[usize::from(r & INDEX_MASK)] = v;
    }

    fn encode(&self, v: u8) -> u8 {
        if self.reg(REG_B) & REG_B_BINARY != 0 {
            v
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> Option<u8> {
        if self.reg(REG_B) & REG_B_BINARY != 0 {
            Some(v)
        } else {
            from_bcd(v)
        }
    }

    fn now(&self) -> DateTime {
        DateTime::from_unix((self.clock)().saturating_add(self.offset_secs))
    }

    /// Copies the current time into the clock registers, in the format register B selects.
    fn latch_time(&mut self) {
        let t = self.now();
        let hour = if self.reg(REG_B) & REG_B_24H != 0 {
            self.encode(t.hour)
        } else {
            let h12 = match t.hour % 12 {
                0 => 12,
                h => h,
            };
            self.encode(h12) | if t.hour >= 12 { HOUR_PM } else { 0 }
        };
        let values = [
            (SECONDS, self.encode(t.second)),
            (MINUTES, self.encode(t.minute)),
            (HOURS, hour),
            (DAY_OF_WEEK, self.encode(t.weekday + 1)),
            (DAY_OF_MONTH, self.encode(t.day)),
            (MONTH, self.encode(t.month)),
            // Both below 100 after the reduction.
            (YEAR, self.encode(t.year.rem_euclid(100) as u8)),
            (
                CENTURY,
                self.encode(t.year.div_euclid(100).clamp(0, 99) as u8),
            ),
        ];
        for (r, v) in values {
            self.set_reg(r, v);
        }
    }

    /// The time the guest wrote into the clock registers, if it is a valid date.
    fn written_time(&self) -> Option<DateTime> {
        let second = self.decode(self.reg(SECONDS)).filter(|&s| s < 60)?;
        let minute = self.decode(self.reg(MINUTES)).filter(|&m| m < 60)?;
        let raw_hour = self.reg(HOURS);
        let hour = if self.reg(REG_B) & REG_B_24H != 0 {
            self.decode(raw_hour).filter(|&h| h < 24)?
        } else {
            let h12 = self
                .decode(raw_hour & !HOUR_PM)
                .filter(|h| (1..=12).contains(h))?;
            h12 % 12 + if raw_hour & HOUR_PM != 0 { 12 } else { 0 }
        };
        let month = self
            .decode(self.reg(MONTH))
            .filter(|m| (1..=12).contains(m))?;
        let yy = self.decode(self.reg(YEAR)).filter(|&y| y < 100)?;
        // A guest that never writes the century keeps the one we latched.
        let century = self.decode(self.reg(CENTURY)).filter(|&c| c < 100)?;
        let year = i64::from(century) * 100 + i64::from(yy);
        let day = self
            .decode(self.reg(DAY_OF_MONTH))
            .filter(|&d| d >= 1 && d <= days_in_month(year, month))?;
        Some(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            weekday: 0,
        })
    }

    /// Makes the time in the clock registers the guest's clock from now on; an invalid date
    /// leaves the clock as it was.
    fn commit_time(&mut self) {
        if let Some(t) = self.written_time() {
            self.offset_secs = t.to_unix().saturating_sub((self.clock)());
        }
    }

    fn read_data(&mut self) -> u8 {
        let index = self.index;
        match index {
            REG_A => self.reg(REG_A) & !REG_A_UIP,
            // No interrupt flags: we raise no RTC interrupts.
            REG_C => 0,
            REG_D => REG_D_VRT,
            _ if TIME_REGS.contains(&index) || index == CENTURY => {
                if self.reg(REG_B) & REG_B_SET == 0 {
                    self.latch_time();
                }
                self.reg(index)
            }
            _ => self.reg(index),
        }
    }

    fn write_data(&mut self, v: u8) {
        let index = self.index;
        let setting = self.reg(REG_B) & REG_B_SET != 0;
        match index {
            REG_A => self.set_reg(REG_A, v & !REG_A_UIP),
            REG_B => {
                if !setting && v & REG_B_SET != 0 {
                    // Freeze the current time so the guest edits a coherent value.
                    self.latch_time();
                }
                self.set_reg(REG_B, v);
                if setting && v & REG_B_SET == 0 {
                    self.commit_time();
                }
            }
            REG_C | REG_D => {}
            _ if TIME_REGS.contains(&index) || index == CENTURY => {
                if setting {
                    self.set_reg(index, v);
                } else {
                    // Without SET a write changes the running clock at once.
                    self.latch_time();
                    self.set_reg(index, v);
                    self.commit_time();
                }
            }
            _ => self.set_reg(index, v),
        }
    }

    fn read_port(&mut self, port: u64) -> u8 {
        match port {
            DATA_PORT => self.read_data(),
            // The index port is write-only on the real part.
            _ => 0xff,
        }
    }

    fn write_port(&mut self, port: u64, v: u8) {
        match port {
            INDEX_PORT => {
                self.index = v & INDEX_MASK;
                self.nmi_disabled = v & NMI_DISABLE != 0;
            }
            DATA_PORT => self.write_data(v),
            _ => {}
        }
    }
}

impl BusDevice for Cmos {
    /// A wider access covers consecutive ports, one byte each.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .map_or(0xff, |port| self.read_port(port));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if let Some(port) = offset.checked_add(i as u64) {
                self.write_port(port, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    /// 2023-11-14 22:13:20 UTC, a Tuesday.
    const T0: i64 = 1_700_000_000;

    fn read(cmos: &mut Cmos, reg: u8) -> u8 {
        cmos.write(INDEX_PORT, &[reg]);
        let mut b = [0];
        cmos.read(DATA_PORT, &mut b);
        b[0]
    }

    fn write(cmos: &mut Cmos, reg: u8, v: u8) {
        cmos.write(INDEX_PORT, &[reg]);
        cmos.write(DATA_PORT, &[v]);
    }

    #[test]
    fn calendar_math_matches_known_timestamps() {
        let t = |year, month, day, hour, minute, second, weekday| DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            weekday,
        };
        for (secs, want) in [
            (0, t(1970, 1, 1, 0, 0, 0, 4)),
            (-1, t(1969, 12, 31, 23, 59, 59, 3)),
            (951_782_400, t(2000, 2, 29, 0, 0, 0, 2)),
            (T0, t(2023, 11, 14, 22, 13, 20, 2)),
            (4_107_542_400, t(2100, 3, 1, 0, 0, 0, 1)),
        ] {
            let got = DateTime::from_unix(secs);
            assert_eq!(got, want, "{secs}");
            assert_eq!(got.to_unix(), secs);
        }
    }

    #[test]
    fn time_reads_in_bcd_24h_by_default() {
        let mut c = Cmos::with_clock(GIB, || T0);
        assert_eq!(read(&mut c, SECONDS), 0x20);
        assert_eq!(read(&mut c, MINUTES), 0x13);
        assert_eq!(read(&mut c, HOURS), 0x22);
        assert_eq!(read(&mut c, DAY_OF_WEEK), 0x03);
        assert_eq!(read(&mut c, DAY_OF_MONTH), 0x14);
        assert_eq!(read(&mut c, MONTH), 0x11);
        assert_eq!(read(&mut c, YEAR), 0x23);
        assert_eq!(read(&mut c, CENTURY), 0x20);
        assert_eq!(read(&mut c, REG_A), 0x26);
        assert_eq!(read(&mut c, REG_B), 0x02);
        assert_eq!(read(&mut c, REG_C), 0);
        assert_eq!(read(&mut c, REG_D), 0x80);
    }

    #[test]
    fn binary_and_12h_formats() {
        let mut c = Cmos::with_clock(GIB, || T0);
        write(&mut c, REG_B, REG_B_BINARY);
        assert_eq!(read(&mut c, HOURS), 10 | HOUR_PM);
        assert_eq!(read(&mut c, YEAR), 23);
        assert_eq!(read(&mut c, SECONDS), 20);
    }

    #[test]
    fn guest_can_set_the_clock() {
        let mut c = Cmos::with_clock(GIB, || T0);
        write(&mut c, REG_B, REG_B_DEFAULT | REG_B_SET);
        // Frozen while SET: reads return what was latched or written.
        write(&mut c, YEAR, 0x24);
        write(&mut c, MONTH, 0x01);
        write(&mut c, DAY_OF_MONTH, 0x02);
        write(&mut c, HOURS, 0x03);
        assert_eq!(read(&mut c, YEAR), 0x24);
        write(&mut c, REG_B, REG_B_DEFAULT);
        assert_eq!(read(&mut c, YEAR), 0x24);
        assert_eq!(read(&mut c, MONTH), 0x01);
        assert_eq!(read(&mut c, DAY_OF_MONTH), 0x02);
        assert_eq!(read(&mut c, HOURS), 0x03);
        assert_eq!(read(&mut c, MINUTES), 0x13);

        // An impossible date is not taken.
        write(&mut c, REG_B, REG_B_DEFAULT | REG_B_SET);
        write(&mut c, MONTH, 0x13);
        write(&mut c, REG_B, REG_B_DEFAULT);
        assert_eq!(read(&mut c, MONTH), 0x01);
        // Neither is a non-BCD value written without SET.
        write(&mut c, MINUTES, 0x5a);
        assert_eq!(read(&mut c, MINUTES), 0x13);
        write(&mut c, MINUTES, 0x45);
        assert_eq!(read(&mut c, MINUTES), 0x45);
    }

    #[test]
    fn memory_size_registers() {
        let word = |c: &mut Cmos, lo: u8| u32::from(read(c, lo)) | u32::from(read(c, lo + 1)) << 8;
        let mut c = Cmos::with_clock(64 << 20, || T0);
        assert_eq!(word(&mut c, BASE_MEM_KIB_LO), 640);
        assert_eq!(word(&mut c, EXT_MEM_KIB_LO), 63 * 1024);
        assert_eq!(word(&mut c, EXT_MEM_KIB_LO_2), 63 * 1024);
        assert_eq!(word(&mut c, MEM_ABOVE_16M_LO), 48 * 16);
        assert_eq!(read(&mut c, MEM_ABOVE_4G_LO), 0);

        let mut c = Cmos::with_clock(5 * GIB, || T0);
        assert_eq!(word(&mut c, EXT_MEM_KIB_LO), 0xffff);
        assert_eq!(
            word(&mut c, MEM_ABOVE_16M_LO),
            ((3 * GIB - (16 << 20)) >> 16) as u32
        );
        let above = u32::from(read(&mut c, 0x5b))
            | u32::from(read(&mut c, 0x5c)) << 8
            | u32::from(read(&mut c, 0x5d)) << 16;
        assert_eq!(above, ((2 * GIB) >> 16) as u32);
    }

    #[test]
    fn nmi_mask_and_hostile_accesses() {
        let mut c = Cmos::with_clock(GIB, || T0);
        c.write(INDEX_PORT, &[NMI_DISABLE | 0x7f]);
        assert!(c.nmi_disabled());
        c.write(DATA_PORT, &[0x55]);
        assert_eq!(read(&mut c, 0x7f), 0x55);
        assert!(!c.nmi_disabled());
        // Register D and C are read-only.
        write(&mut c, REG_D, 0);
        assert_eq!(read(&mut c, REG_D), 0x80);
        let mut wide = [0u8; 4];
        c.read(INDEX_PORT, &mut wide);
        assert_eq!((wide[0], wide[2], wide[3]), (0xff, 0xff, 0xff));
        c.read(u64::MAX, &mut wide);
        c.write(u64::MAX - 1, &[0xff; 4]);
        c.write(7, &[1]);
        c.read(0, &mut []);
        c.write(0, &[]);
        // A 16-bit write sets the index then the data.
        c.write(INDEX_PORT, &[0x40, 0x99]);
        assert_eq!(read(&mut c, 0x40), 0x99);
    }
}
