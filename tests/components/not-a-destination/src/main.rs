//! A valid component of another world (a WASI command exporting `wasi:cli/run`): the host
//! must say it is not a destination plugin.

fn main() {
    println!("I am a command, not a destination");
}
