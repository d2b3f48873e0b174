import Foundation

/// Sizes on command lines: a byte count with an optional unit, "512MiB", "2GB", "1.5G", "4096".
/// Units are powers of 1024 (K, M, G, T with or without "i", "B" optional) except the SI forms
/// "KB", "MB", "GB", "TB", which are powers of 1000.
public enum ByteCount {
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        guard let number = Double(digits), number >= 0 else { return nil }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).uppercased()
        let exponents = ["": 0, "K": 1, "M": 2, "G": 3, "T": 4]
        var scale: Double
        if unit.isEmpty || unit == "B" {
            scale = 1
        } else if unit.count == 2, unit.hasSuffix("B"), let power = exponents[String(unit.prefix(1))] {
            scale = pow(1000, Double(power))
        } else if let power = exponents[unit.hasSuffix("IB") ? String(unit.dropLast(2)) : unit] {
            scale = pow(1024, Double(power))
        } else {
            return nil
        }
        let bytes = number * scale
        return bytes < Double(Int.max) ? Int(bytes) : nil
    }
}
