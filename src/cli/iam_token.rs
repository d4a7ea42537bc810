//! STUB — owned by the AWS helper. `bastion iam-token …`: prints a token from the chain.

use super::IamTokenArgs;

pub fn run(args: IamTokenArgs) -> anyhow::Result<()> {
    let _ = args;
    todo!()
}
