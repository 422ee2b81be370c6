#!/usr/bin/env node
/** The `pgq` executable: runs the program defined in main.ts. */
import { main } from './main.js';

process.exitCode = await main(process.argv);
