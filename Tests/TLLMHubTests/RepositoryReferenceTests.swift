import Testing

@testable import TLLMHub

@Suite struct RepositoryReferenceTests {
    @Test func parsesIDRevisionAndFileChoice() throws {
        let plain = try #require(RepositoryReference(parsing: "HuggingFaceTB/SmolLM2-135M-Instruct"))
        #expect(plain.id == "HuggingFaceTB/SmolLM2-135M-Instruct")
        #expect(plain.revision == "main")
        #expect(plain.fileChoice == nil)
        #expect(plain.cacheFolderName == "models--HuggingFaceTB--SmolLM2-135M-Instruct")

        let full = try #require(RepositoryReference(parsing: "org/name@refs/pr/1:Q4_K_M"))
        #expect(full.id == "org/name")
        #expect(full.revision == "refs/pr/1")
        #expect(full.fileChoice == "Q4_K_M")
        #expect(full.description == "org/name@refs/pr/1:Q4_K_M")

        let file = try #require(RepositoryReference(parsing: "org/name:sub/model-q8_0.gguf"))
        #expect(file.fileChoice == "sub/model-q8_0.gguf")

        let legacy = try #require(RepositoryReference(parsing: "gpt2"))
        #expect(legacy.cacheFolderName == "models--gpt2")
    }

    @Test func recognisesCommitHashes() throws {
        let hash = String(repeating: "ab12", count: 10)
        #expect(try #require(RepositoryReference(parsing: "org/name@\(hash)")).revisionIsCommitHash)
        #expect(try #require(RepositoryReference(parsing: "org/name@main")).revisionIsCommitHash == false)
    }

    @Test(arguments: [
        "", "a/b/c", "org--x/name", "org/na..me", "org/name.git", "/abs/path", "org/", "org/name@", "org/name:",
    ])
    func rejectsMalformedIDs(_ text: String) {
        #expect(RepositoryReference(parsing: text) == nil)
    }

    @Test func pathsAreNotMistakenForRepoIDs() {
        #expect(LocalPath.looksLikePath("./model.gguf"))
        #expect(LocalPath.looksLikePath("models/model.gguf"))
        #expect(LocalPath.looksLikePath("~/models"))
        #expect(!LocalPath.looksLikePath("org/name"))
        #expect(!LocalPath.looksLikePath("org/name:model.gguf"))
        #expect(LocalPath.expandingTilde("~/x", home: "/home/u") == "/home/u/x")
    }
}
