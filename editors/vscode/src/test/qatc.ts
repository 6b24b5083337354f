// Finds the qatc executable the tests talk to: $QATC_BIN, else the workspace's release build.
import * as fs from "fs";
import * as path from "path";

export const extensionRoot = path.join(__dirname, "..", "..");

export function qatcBinary(): string | undefined {
  const candidates = [process.env.QATC_BIN, path.join(extensionRoot, "..", "..", "target", "release", "qatc")];
  return candidates.find((c): c is string => !!c && fs.existsSync(c));
}

// Without a qatc build the server tests skip with a reason; under CI=true that is a failure.
export function skipReason(): string | undefined {
  if (qatcBinary()) return undefined;
  const reason = "no qatc executable: build it (cargo build --release) or set QATC_BIN";
  if (process.env.CI === "true") throw new Error(reason);
  return reason;
}
