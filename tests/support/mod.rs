#![allow(dead_code)]
pub mod iam_front;
