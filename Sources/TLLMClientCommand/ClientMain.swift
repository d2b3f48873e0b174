import ArgumentParser
import TLLMCluster

/// The `tllm.client` executable: everything is in `ClientCommand`.
@main
extension ClientCommand {}
