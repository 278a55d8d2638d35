/**
 * A load-generator child process (load-worker.ts), driven over IPC: its own process, so its CPU
 * is not the server's. `ask` sends one command and resolves with its reply; `progress` messages
 * the worker sends while a command runs go to `onProgress`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

export class Generator {
  readonly proc: ChildProcess;
  private waiters: ((m: any) => void)[] = [];
  private readonly up: Promise<unknown>;
  onProgress: ((m: any) => void) | undefined;

  constructor() {
    this.proc = fork(resolve(import.meta.dirname, 'load-worker.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (m: any) => {
      if (m.type === 'error') throw new Error(`load generator: ${m.error}`);
      if (m.type === 'progress') return this.onProgress?.(m);
      this.waiters.shift()?.(m);
    });
    this.up = this.next();
  }

  private next(): Promise<any> {
    return new Promise((r) => this.waiters.push(r));
  }

  async ask(cmd: Record<string, unknown>): Promise<any> {
    await this.up;
    const p = this.next();
    this.proc.send(cmd);
    return p;
  }

  async close(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    this.proc.send({ cmd: 'exit' });
    await new Promise((r) => this.proc.once('exit', r));
  }
}
