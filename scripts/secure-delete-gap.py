#!/usr/bin/env python3
"""SQLite's secure_delete leaves stale copies of deleted rows (docs/design/embedded-store.md,
"Old copies in free space: the scrub": why a scavenge ends by zeroing the free space of
every page).

Plain SQLite, no Concord: a table shaped as the embedded store's `events` and `event_tags`,
twenty streams written interleaved, ten of them with rows carrying a marker; those rows are
deleted in chunks of 100 per stream, as a scavenge does, with `PRAGMA secure_delete = ON`,
then `incremental_vacuum` and `wal_checkpoint(TRUNCATE)`. In 2 of 30 seeds (0 and 11) the
marker is still in the database file afterwards, once, although no row holds it: a B-tree
balance rebuilt a page and left a moved cell's old bytes in its unallocated area, which
secure_delete never touches. `VACUUM` afterwards removes it.

    python3 scripts/secure-delete-gap.py        # prints, per seed, copies left without and with VACUUM
"""
import os
import random
import sqlite3
import tempfile
def run(trial, vacuum):
    path=os.path.join(tempfile.mkdtemp(), 'gap.db')
    for s in ('','-wal','-shm'):
        try: os.remove(path+s)
        except FileNotFoundError: pass
    db = sqlite3.connect(path, isolation_level=None)
    db.execute('PRAGMA journal_mode=WAL'); db.execute('PRAGMA secure_delete=ON'); db.execute('PRAGMA auto_vacuum=INCREMENTAL')
    db.execute('CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT, version INT, hidden INT, data BLOB, tags TEXT)')
    db.execute('CREATE TABLE event_tags (tag TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY(tag, position)) WITHOUT ROWID')
    random.seed(trial)
    marker='gone-SECRET%d' % trial
    pos=0; version={}
    streams=[f's{k}' for k in range(20)]
    hidden=set(streams[:10])
    for wave in range(3):
        for rnd in range(15):
            db.execute('BEGIN')
            for st in streams:
                for i in range(20):
                    pos+=1; version[st]=version.get(st,0)+1
                    h = st in hidden and version[st] % 300 < 250
                    m = marker if h else 'keep'
                    data = ('{"m":"%s","s":"%s","v":%d,"pad":"%s"}' % (m, st, version[st], 'scavenge-kill-padding-'*random.randint(1,4))).encode()
                    db.execute('INSERT INTO events VALUES (?,?,?,?,?,?)', (pos, st, version[st], int(h), data, 'g'))
                    db.execute('INSERT INTO event_tags VALUES (?,?)', (f'g:{pos%3}', pos))
                    if h: db.execute('INSERT INTO event_tags VALUES (?,?)', (f'h:{marker}', pos))
            db.execute('COMMIT')
        for st in random.sample(sorted(hidden), len(hidden)):
            while True:
                rows=[r[0] for r in db.execute('SELECT position FROM events WHERE stream=? AND hidden=1 ORDER BY position LIMIT 100', (st,))]
                if not rows: break
                db.execute('BEGIN')
                for p in rows:
                    db.execute('DELETE FROM events WHERE position=?', (p,))
                    db.execute('DELETE FROM event_tags WHERE tag=? AND position=?', (f'h:{marker}', p))
                db.execute('COMMIT')
        db.execute('PRAGMA incremental_vacuum')
        db.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    if vacuum:
        db.execute('VACUUM'); db.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    db.close()
    data=b''.join(open(path+s,'rb').read() for s in ('','-wal') if os.path.exists(path+s))
    return data.count(marker.encode()), sqlite3.sqlite_version
for t in range(30):
    left, version = run(t, False)
    if left:
        print(f'seed {t}: {left} copy of a deleted row left (SQLite {version}); after VACUUM: {run(t, True)[0]}')
