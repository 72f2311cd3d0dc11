// Generates the agent RPC code from proto/agent.proto (needs `protoc`, from Debian's
// protobuf-compiler, which etcd-client needs as well).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    // Worktrees of this repository share one target directory (and with it this script's
    // output), and a proto edited before another worktree's build looks older than that
    // build's output: without this, a build could compile against another worktree's
    // messages. Each worktree builds from its own directory, so a change of directory
    // regenerates them.
    println!("cargo:rerun-if-env-changed=PWD");
    tonic_prost_build::configure().compile_protos(&["proto/agent.proto"], &["proto"])?;
    Ok(())
}
