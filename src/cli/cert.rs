//! STUB — owned by the identity helper. `bastion cert issue USER --ttl 8h --out DIR`.

use super::CertIssueArgs;

pub fn issue(args: CertIssueArgs) -> anyhow::Result<()> {
    let _ = args;
    todo!()
}
