/**
 * Finds the PostgreSQL the tests run against, in this order:
 * 1. PGQ_TEST_DATABASE_URL or DATABASE_URL;
 * 2. a testcontainers PostgreSQL when a Docker engine answers;
 * 3. an embedded PostgreSQL in a temporary directory.
 * Every test file then works in a schema of its own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    databaseKind: string;
  }
}

let embedded: { child: ChildProcess; dataDir: string } | undefined;
let container: { stop(): Promise<unknown> } | undefined;

async function dockerAnswers(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    const client = await Promise.race([
      getContainerRuntimeClient(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('timeout')), 5_000)),
    ]);
    return Boolean(client);
  } catch {
    return false;
  }
}

export async function setup(project: TestProject): Promise<void> {
  const given = process.env.PGQ_TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (given) {
    project.provide('databaseUrl', given);
    project.provide('databaseKind', 'given');
    return;
  }
  if (process.env.PGQ_TEST_NO_DOCKER !== '1' && (await dockerAnswers())) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const started = await new PostgreSqlContainer('postgres:16-alpine').withCommand(['postgres', '-c', 'max_connections=300']).start();
    container = started;
    project.provide('databaseUrl', started.getConnectionUri());
    project.provide('databaseKind', 'container');
    return;
  }
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'embedded-server.ts'), 'test'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = await new Promise<{ url: string; dataDir: string }>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).once('line', (line) => resolve(JSON.parse(line) as { url: string; dataDir: string }));
    child.once('exit', (code) => reject(new Error(`the embedded PostgreSQL for the tests exited (${code}) before it was ready`)));
  });
  embedded = { child, dataDir: ready.dataDir };
  project.provide('databaseUrl', ready.url);
  project.provide('databaseKind', 'embedded');
}

export async function teardown(): Promise<void> {
  if (embedded) {
    const { child, dataDir } = embedded;
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  await container?.stop();
}
