import js from "@eslint/js"
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["node_modules/", ".devicescript/", "bridge/src/gen/", "firmware/gen/", "data/", "web/dist/", "dist/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    // DeviceScript, not Node: typed with the firmware's own project (no Node types, its lib from
    // @devicescript/core). tsconfig.eslint.json adds the drivers, targets and tests that `tsc -p
    // firmware` leaves to `devs build`.
    files: ["firmware/**/*.ts"],
    languageOptions: {
      parserOptions: { project: "firmware/tsconfig.eslint.json", tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // a DeviceScript arrow function cannot use `this` ("'this' cannot be used here"): callbacks
      // set up in a method close over `const self = this`
      "@typescript-eslint/no-this-alias": ["error", { allowedNames: ["self"] }],
    },
  },
  {
    // the VM tests feed the golden frames' JSON, of every message shape, to the encoder
    files: ["firmware/test/**/*.ts"],
    rules: { "@typescript-eslint/no-explicit-any": "off" },
  },
)
