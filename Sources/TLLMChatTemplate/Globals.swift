import Foundation

/// The global functions a chat template can call: Jinja2's defaults that templates use, plus the
/// two `transformers` adds (`raise_exception`, `strftime_now`).
enum Globals {
    static let names: Set<String> = [
        "range", "namespace", "dict", "raise_exception", "strftime_now", "joiner", "cycler",
    ]

    /// Jinja2's sandbox refuses larger ranges (`MAX_RANGE`); so do we, with the same limit.
    static let maximumRange = 100_000
}

extension Interpreter {
    func callGlobal(_ name: String, _ arguments: CallArguments, at position: SourcePosition?) throws -> TemplateValue {
        switch name {
        case "raise_exception":
            let message = arguments.value(0, "message").map { str($0) } ?? ""
            throw ChatTemplateError(.raised, message, at: position)
        case "strftime_now":
            guard let format = arguments.value(0, "format") else {
                throw ChatTemplateError(.type, "strftime_now() missing required argument 'format'", at: position)
            }
            return .string(Strftime.format(str(format), date: now, timeZone: timeZone))
        case "range":
            return try range(arguments, at: position)
        case "namespace", "dict":
            var attributes = TemplateDictionary()
            for value in arguments.positional {
                guard case .dictionary(let initial) = value else {
                    throw ChatTemplateError(.type, "\(name)() positional argument must be a mapping", at: position)
                }
                for entry in initial.entries { attributes[entry.key] = entry.value }
            }
            for (key, value) in arguments.keyword { attributes[key] = value }
            if name == "dict" { return .dictionary(attributes) }
            namespaces.append(attributes)
            return .namespace(TemplateNamespace(id: namespaces.count - 1))
        default:
            throw ChatTemplateError(.unsupported, "the global function '\(name)' is not supported", at: position)
        }
    }

    private func range(_ arguments: CallArguments, at position: SourcePosition?) throws -> TemplateValue {
        var bounds: [Int] = []
        for value in arguments.positional {
            switch value {
            case .int(let i): bounds.append(i)
            case .bool(let b): bounds.append(b ? 1 : 0)
            default:
                throw ChatTemplateError(
                    .type, "'\(typeName(value))' object cannot be interpreted as an integer", at: position)
            }
        }
        let (start, stop, step): (Int, Int, Int)
        switch bounds.count {
        case 1: (start, stop, step) = (0, bounds[0], 1)
        case 2: (start, stop, step) = (bounds[0], bounds[1], 1)
        case 3: (start, stop, step) = (bounds[0], bounds[1], bounds[2])
        default:
            throw ChatTemplateError(.type, "range expected 1 to 3 integer arguments, got \(bounds.count)", at: position)
        }
        guard step != 0 else { throw ChatTemplateError(.value, "range() arg 3 must not be zero", at: position) }
        let span = step > 0 ? Double(stop) - Double(start) : Double(start) - Double(stop)
        let count = span <= 0 ? 0 : Int((span / Double(abs(step))).rounded(.up))
        guard count <= Globals.maximumRange else {
            throw ChatTemplateError(
                .limit, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (\(Globals.maximumRange)).",
                at: position)
        }
        return .array((0..<count).map { .int(start + $0 * step) })
    }
}

/// Python's `datetime.strftime` for the directives chat templates use (`%d %b %Y`, `%B`, `%H:%M`…),
/// with English (C locale) names.
enum Strftime {
    private static let weekdays = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    private static let months = [
        "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
        "December",
    ]

    static func format(_ format: String, date: Date, timeZone: TimeZone) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let parts = calendar.dateComponents(
            [.year, .month, .day, .hour, .minute, .second, .weekday, .nanosecond], from: date)
        let year = parts.year ?? 1970
        let month = parts.month ?? 1
        let day = parts.day ?? 1
        let hour = parts.hour ?? 0
        let minute = parts.minute ?? 0
        let second = parts.second ?? 0
        let weekday = (parts.weekday ?? 1) - 1
        let dayOfYear = calendar.ordinality(of: .day, in: .year, for: date) ?? 1
        var out = ""
        var scalars = Array(format.unicodeScalars)[...]
        while let c = scalars.popFirst() {
            guard c == "%", var directive = scalars.popFirst() else {
                out.unicodeScalars.append(c)
                continue
            }
            // glibc's `%-d` (no padding), which Python passes through on Linux.
            var unpadded = false
            if directive == "-", let next = scalars.first, "dmHIMSjy".unicodeScalars.contains(next) {
                unpadded = true
                directive = next
                scalars.removeFirst()
            }
            func pad(_ value: Int, _ width: Int = 2) -> String {
                let text = String(value)
                return unpadded ? text : String(repeating: "0", count: max(0, width - text.count)) + text
            }
            switch directive {
            case "a": out += String(weekdays[weekday].prefix(3))
            case "A": out += weekdays[weekday]
            case "b", "h": out += String(months[month - 1].prefix(3))
            case "B": out += months[month - 1]
            case "d": out += pad(day)
            case "e": out += (day < 10 ? " " : "") + String(day)
            case "m": out += pad(month)
            case "y": out += pad(year % 100)
            case "Y": out += String(year)
            case "H": out += pad(hour)
            case "I": out += pad(hour % 12 == 0 ? 12 : hour % 12)
            case "p": out += hour < 12 ? "AM" : "PM"
            case "M": out += pad(minute)
            case "S": out += pad(second)
            case "f": out += pad((parts.nanosecond ?? 0) / 1000, 6)
            case "j": out += pad(dayOfYear, 3)
            case "w": out += String(weekday)
            case "u": out += String(weekday == 0 ? 7 : weekday)
            case "D": out += pad(month) + "/" + pad(day) + "/" + pad(year % 100)
            case "F": out += String(year) + "-" + pad(month) + "-" + pad(day)
            case "T": out += pad(hour) + ":" + pad(minute) + ":" + pad(second)
            case "R": out += pad(hour) + ":" + pad(minute)
            case "Z": out += timeZone.abbreviation(for: date) ?? ""
            case "z":
                let offset = timeZone.secondsFromGMT(for: date) / 60
                out += (offset < 0 ? "-" : "+") + pad(abs(offset) / 60) + pad(abs(offset) % 60)
            case "n": out += "\n"
            case "t": out += "\t"
            case "%": out += "%"
            default:
                out += "%"
                out.unicodeScalars.append(directive)
            }
        }
        return out
    }
}
