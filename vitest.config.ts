import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // Upper bounds for a hung test, not speed targets: CLI and worker-process tests
    // start several Node processes, which takes long on a loaded 2-core machine.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
    env: { PGQ_LOG_LEVEL: process.env.PGQ_LOG_LEVEL ?? 'error' },
  },
});
