import Foundation
import TestSupport

func sharedModel(_ name: String) -> String { SharedData.path("models/\(name)") }
