// Starts kinesalite (a Kinesis emulator on LevelDB's in-memory backend) on 127.0.0.1 for the
// tests: `node scripts/kinesalite-server.js PORT`, with NODE_PATH pointing at the
// node_modules that scripts/kinesalite.sh installed. Streams become ACTIVE at once.
const kinesalite = require('kinesalite');
const port = Number(process.argv[2]);
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100 });
server.listen(port, '127.0.0.1', (error) => {
  if (error) {
    console.error(error);
    process.exit(1);
  }
  console.log(`kinesalite listening on 127.0.0.1:${port}`);
});
