// A misbehaving TypeScript destination for the runtime's limit tests, like the Rust
// `tests/components/hostile`: the `mode` setting chooses what each call does, so one
// component exercises every limit and a normal call (`ok`) can follow each failure.

import { type Config, type Event, Request, destination, log } from '@canopy/plugin-sdk';

declare const fetch: ((url: string) => Promise<unknown>) | undefined;

export const plugin = destination({
  describe() {
    return {
      id: 'hostile-ts',
      name: 'Hostile (TypeScript)',
      version: '0.1.0',
      description: 'Breaks every limit on request',
      allowedHosts: ['hostile.test'],
    };
  },

  validateConfig() {
    return [];
  },

  transform(event: Event, config: Config) {
    switch (config.textOr('mode', 'ok')) {
      case 'loop': {
        let n = 0;
        for (;;) n = (n + 1) | 0;
      }
      case 'memory-bomb': {
        const hoard: Uint8Array[] = [];
        for (;;) hoard.push(new Uint8Array(8 << 20));
      }
      case 'big-output':
        // Past the 4 MiB output limit.
        return [Request.post('https://hostile.test/').bytes(new Uint8Array((5 << 20) + 1).fill(120))];
      case 'throw':
        throw new Error('hostile plugin threw on purpose');
      case 'fetch': {
        // The engine has `fetch`, but the component is built without HTTP (`-d http`): its
        // imports are stubs that trap, so nothing reaches the network.
        if (typeof fetch !== 'function') throw new Error('no fetch in this sandbox');
        void fetch('https://example.com/');
        return [Request.post('https://hostile.test/fetched')];
      }
      case 'clock': {
        // A busy wait on the clock: the time limit ends it.
        const start = Date.now();
        while (Date.now() - start < 3_600_000) {
          /* waiting */
        }
        return [];
      }
      case 'log':
        log.info(`transforming ${event.event}`);
        return [Request.post('https://hostile.test/')];
      default:
        return [Request.post('https://hostile.test/ok').header('X-Event', event.event)];
    }
  },
});
