/* File watcher: calls a registered reload function when its file changes, and
 * every registered function on request (SIGHUP).
 *
 * main registers {path, reload_fn} pairs (POLICY_FILE -> the policy,
 * ALERTS_FILE -> the alerts) and starts one background thread; the watcher
 * knows nothing of what the files mean, so no module below main depends on
 * another through it. Change detection: inotify on each file's directory
 * (editors and deploy tools replace files by rename, which a watch on the file
 * itself would lose), filtered by name, plus a stat poll every second (mtime,
 * size, inode) for filesystems without inotify (NFS, some container mounts).
 * An event starts a short quiet period so a write in several steps is reloaded
 * once, complete. A file that disappears is not reported (an editor's rename
 * in progress, or a deletion: the rules in force stay).
 *
 * Threads: sc_watch_add/start/stop from one thread (main); the reload
 * functions run on the watcher thread, one at a time; sc_watch_request is
 * async-signal-safe. */
#ifndef SCENECOMP_CORE_WATCH_H
#define SCENECOMP_CORE_WATCH_H

#include <stdbool.h>

/* At most this many files are watched. */
#define SC_WATCH_MAX 8

/* Called on the watcher thread. trigger names the cause for the log ("file
 * change" or "SIGHUP"); forced is true for a request (SIGHUP: reload even if
 * the content looks unchanged), false for a detected change. */
typedef void (*sc_watch_fn)(const char *trigger, bool forced, void *ud);

/* Registers path (copied) with fn and ud (borrowed until sc_watch_stop).
 * Before sc_watch_start only. Returns 0, or -1 when full, the path is too
 * long or the watcher runs. */
int sc_watch_add(const char *path, sc_watch_fn fn, void *ud);

/* Starts the watcher thread. Returns 0 or -1 (logged). A request made before
 * (sc_watch_request) is served at once. */
int sc_watch_start(void);

/* Async-signal-safe: asks the watcher thread to call every reload function
 * (trigger "SIGHUP", forced). Before start it is remembered; after stop it is
 * ignored. */
void sc_watch_request(void);

/* Stops and joins the thread (a reload in progress finishes first) and forgets
 * every registration. Safe to call when not started. */
void sc_watch_stop(void);

#endif
