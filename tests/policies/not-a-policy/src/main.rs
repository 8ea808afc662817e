//! A plain WASI command: building it for `wasm32-wasip2` gives a component
//! that exports `wasi:cli/run` and nothing of the `portcullis:policy` world.
//! The host's tests use it to check the "does not implement the world" error.

fn main() {
    println!("I am not a Portcullis policy");
}
