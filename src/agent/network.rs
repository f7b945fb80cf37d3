//! The subnet pool for task networks.
//!
//! Every multi-container task gets its own user-defined bridge network. Docker's
//! default address pools hold only about 30 such networks, so the agent hands
//! out small subnets itself: `--subnet-pool` (default `10.231.0.0/16`) cut into
//! /28 blocks (14 addresses: a gateway and up to 13 containers), 4096 networks
//! in the default pool. Nothing is persisted: the subnets in use are read back
//! from the networks the agent finds at start.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The default `--subnet-pool`.
pub const DEFAULT_POOL: &str = "10.231.0.0/16";
/// The prefix length of every task network.
pub const BLOCK_PREFIX: u8 = 28;

/// An IPv4 range cut into /28 blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetPool {
    base: u32,
    prefix: u8,
}

/// One block of the pool: its CIDR and its gateway (the first address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub cidr: String,
    pub gateway: String,
}

impl SubnetPool {
    /// How many /28 blocks the pool holds.
    pub fn len(&self) -> u32 {
        1u32 << (BLOCK_PREFIX - self.prefix)
    }

    /// Never true: a pool holds at least one block.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `index`th block.
    pub fn block(&self, index: u32) -> Option<Subnet> {
        if index >= self.len() {
            return None;
        }
        let start = self.base + (index << (32 - BLOCK_PREFIX));
        Some(Subnet {
            cidr: format!("{}/{BLOCK_PREFIX}", Ipv4Addr::from(start)),
            gateway: Ipv4Addr::from(start + 1).to_string(),
        })
    }

    /// The first block whose CIDR is not in `used`.
    pub fn allocate(&self, used: &BTreeSet<String>) -> Option<Subnet> {
        (0..self.len())
            .filter_map(|i| self.block(i))
            .find(|s| !used.contains(&s.cidr))
    }
}

impl Default for SubnetPool {
    fn default() -> Self {
        DEFAULT_POOL.parse().expect("the default pool parses")
    }
}

impl fmt::Display for SubnetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl FromStr for SubnetPool {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint = "give an IPv4 range such as 10.231.0.0/16";
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("subnet pool {s:?} has no prefix length: {hint}"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("subnet pool {s:?} is not an IPv4 address: {hint}"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("subnet pool {s:?} has a bad prefix length: {hint}"))?;
        if !(8..=BLOCK_PREFIX).contains(&prefix) {
            return Err(format!(
                "subnet pool {s:?} must have a prefix length between /8 and /{BLOCK_PREFIX}: {hint}"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(SubnetPool {
            base: u32::from(addr) & mask,
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pool_holds_4096_blocks() {
        let pool = SubnetPool::default();
        assert_eq!(pool.len(), 4096);
        assert_eq!(
            pool.block(0),
            Some(Subnet {
                cidr: "10.231.0.0/28".into(),
                gateway: "10.231.0.1".into()
            })
        );
        assert_eq!(pool.block(1).unwrap().cidr, "10.231.0.16/28");
        assert_eq!(pool.block(4095).unwrap().cidr, "10.231.255.240/28");
        assert_eq!(pool.block(4096), None);
        assert_eq!(pool.to_string(), "10.231.0.0/16");
    }

    #[test]
    fn allocation_skips_used_blocks() {
        let pool: SubnetPool = "192.168.50.0/27".parse().unwrap();
        assert_eq!(pool.len(), 2);
        let mut used = BTreeSet::from(["192.168.50.0/28".to_string()]);
        assert_eq!(pool.allocate(&used).unwrap().cidr, "192.168.50.16/28");
        used.insert("192.168.50.16/28".into());
        assert_eq!(pool.allocate(&used), None);
    }

    #[test]
    fn bad_pools_are_refused_with_a_hint() {
        for bad in ["10.0.0.0", "10.0.0.0/30", "x/16", "10.0.0.0/4"] {
            let e = bad.parse::<SubnetPool>().unwrap_err();
            assert!(e.contains("10.231.0.0/16"), "{e}");
        }
        // Host bits are cleared.
        assert_eq!(
            "10.1.2.3/16".parse::<SubnetPool>().unwrap().to_string(),
            "10.1.0.0/16"
        );
    }
}
