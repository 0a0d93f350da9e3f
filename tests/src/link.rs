//! Interfaces inside lab namespaces, deleted when their guard drops.
//!
//! A [`Link`] borrows its [`NetNs`], so the borrow checker makes every link guard drop before
//! its namespace. Deleting one end of a veth pair deletes both; the other end's guard then finds
//! nothing left to delete, which is fine.

use std::fmt;

use anyhow::Result;

use crate::netns::{NetNs, fail_in_drop};

/// An interface in a lab namespace.
pub struct Link<'ns> {
    netns: &'ns NetNs,
    name: String,
}

impl<'ns> Link<'ns> {
    /// Takes charge of an existing interface: it is deleted when the guard drops.
    pub(crate) fn adopt(netns: &'ns NetNs, name: &str) -> Self {
        Self {
            netns,
            name: name.to_owned(),
        }
    }

    /// The interface name inside its namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace the interface lives in.
    pub fn netns(&self) -> &'ns NetNs {
        self.netns
    }

    /// Sets the interface up.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn set_up(&self) -> Result<()> {
        self.netns.ip(["link", "set", "dev", &self.name, "up"])?;
        Ok(())
    }

    /// Adds an address with its prefix length, e.g. `198.18.0.1/24`.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn add_address(&self, address: &str) -> Result<()> {
        self.netns
            .ip(["address", "add", address, "dev", &self.name])?;
        Ok(())
    }

    fn exists(&self) -> bool {
        self.netns.ip(["link", "show", "dev", &self.name]).is_ok()
    }
}

impl fmt::Debug for Link<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.netns.name(), self.name)
    }
}

impl Drop for Link<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.netns.ip(["link", "delete", "dev", &self.name])
            && self.exists()
        {
            fail_in_drop(&format!("deleting {self:?}: {err:#}"));
        }
    }
}

/// Makes a veth pair joining two namespaces, `a_name` in `a` and `b_name` in `b`, both up. It is
/// created inside `a` with its peer moved straight into `b`, so it never appears in the caller's
/// namespace.
///
/// # Errors
///
/// When `ip` fails.
pub fn veth_pair<'a, 'b>(
    a: &'a NetNs,
    a_name: &str,
    b: &'b NetNs,
    b_name: &str,
) -> Result<(Link<'a>, Link<'b>)> {
    let a_link = a.add_link(
        a_name,
        &["type", "veth", "peer", "name", b_name, "netns", b.name()],
    )?;
    let b_link = Link::adopt(b, b_name);
    a_link.set_up()?;
    b_link.set_up()?;
    Ok((a_link, b_link))
}
