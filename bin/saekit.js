#!/usr/bin/env node
// The `saekit` command. The CLI itself is TypeScript, compiled to dist/ by `npm install`.
// A closed pipe (`saekit list | head`) ends the command quietly instead of crashing it.
process.stdout.on('error', (e) => {
  if (e && e.code === 'EPIPE') process.exit(0);
  throw e;
});
import('../dist/cli/main.js')
  .then((cli) => cli.main(process.argv.slice(2)))
  .then((code) => {
    process.exitCode = code;
  })
  .catch((e) => {
    process.stderr.write(`saekit: ${e && e.message ? e.message : e}\n`);
    process.exitCode = 1;
  });
