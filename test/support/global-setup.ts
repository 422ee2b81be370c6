/**
 * Finds the PostgreSQL the tests run against, in this order:
 * 1. PGQ_TEST_DATABASE_URL or DATABASE_URL;
 * 2. a testcontainers PostgreSQL when a Docker engine answers;
 * 3. an embedded PostgreSQL in a temporary directory.
 * Every test file then works in a schema of its own. With PGQ_TEST_PG_MAJOR
 * set (the compatibility matrix sets it), the run stops at once unless the
 * server found is that PostgreSQL major.
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

async function checkMajor(url: string): Promise<void> {
  const expected = process.env.PGQ_TEST_PG_MAJOR;
  if (!expected) return;
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ num: string; version: string }>(
      "select current_setting('server_version_num') as num, version() as version",
    );
    const major = Math.floor(Number(rows[0]!.num) / 10_000);
    if (String(major) !== expected) {
      throw new Error(`PGQ_TEST_PG_MAJOR is ${expected} but the tests' server is ${rows[0]!.version}`);
    }
  } finally {
    await client.end();
  }
}

export async function setup(project: TestProject): Promise<void> {
  try {
    await start(project);
  } catch (error) {
    await teardown();
    throw error;
  }
}

async function start(project: TestProject): Promise<void> {
  const given = process.env.PGQ_TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (given) {
    await checkMajor(given);
    project.provide('databaseUrl', given);
    project.provide('databaseKind', 'given');
    return;
  }
  if (process.env.PGQ_TEST_NO_DOCKER !== '1' && (await dockerAnswers())) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const started = await new PostgreSqlContainer('postgres:16-alpine').withCommand(['postgres', '-c', 'max_connections=300']).start();
    container = started;
    await checkMajor(started.getConnectionUri());
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
  await checkMajor(ready.url);
  project.provide('databaseUrl', ready.url);
  project.provide('databaseKind', 'embedded');
}

export async function teardown(): Promise<void> {
  if (embedded) {
    const { child, dataDir } = embedded;
    embedded = undefined;
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  const started = container;
  container = undefined;
  await started?.stop();
}
