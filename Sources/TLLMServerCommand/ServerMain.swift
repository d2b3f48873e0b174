import ArgumentParser
import TLLMServer

/// The `tllm.server` executable: everything is in `ServerCommand`.
@main
extension ServerCommand {}
