// The Web globals the component's JavaScript engine (StarlingMonkey) provides and the SDK
// uses. Declared here so that plugin projects compile against ES2022 alone: the DOM library
// would promise `fetch`, timers and the rest, which a sandboxed plugin does not have.
declare global {
  class TextEncoder {
    encode(input?: string): Uint8Array;
  }
  class TextDecoder {
    constructor(label?: string, options?: { fatal?: boolean });
    decode(input?: Uint8Array): string;
  }
}
export {};
