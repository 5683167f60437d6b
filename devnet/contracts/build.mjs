// Rebuilds TestToken.json from TestToken.sol with solcjs (npm "solc", installed by ./dev into .tools).
// Usage: node devnet/contracts/build.mjs   (the artifact is committed; tests never compile)
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "..", ".tools", "package.json"));
const solc = require("solc");
const source = readFileSync(join(here, "TestToken.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "TestToken.sol": { content: source } },
  settings: { optimizer: { enabled: true, runs: 200 }, evmVersion: "cancun", outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of output.errors ?? []) if (e.severity === "error") { console.error(e.formattedMessage); process.exit(1); }
const c = output.contracts["TestToken.sol"].TestToken;
writeFileSync(join(here, "TestToken.json"), JSON.stringify({ compiler: solc.version(), abi: c.abi, bytecode: "0x" + c.evm.bytecode.object }, null, 1) + "\n");
console.log("TestToken.json written with", solc.version());
