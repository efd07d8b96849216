package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ShardEnv is set in a child process's environment to its share of the
// run, as JSON. A program that passes a ShardCommand must call RunShard
// when it finds it set.
const ShardEnv = "HERALD_BENCH_SHARD"

// shardHandle is the parent's view of a shard, in this process or in a
// child.
type shardHandle interface {
	progress() progress
	// storm drops the shard's connections and starts reconnecting them;
	// progress says when the drops are done.
	storm() error
	// mark returns the shard's counts so far and its latencies since the
	// previous mark (see shard.mark).
	mark(ctx context.Context) (*shardResult, error)
	// finish ends the shard and returns what it measured.
	finish(ctx context.Context) (*shardResult, error)
}

// localShard is a shard in the parent's own process.
type localShard struct{ s *shard }

func (l localShard) progress() progress { return l.s.progress() }
func (l localShard) storm() error       { l.s.storm(); return nil }
func (l localShard) mark(context.Context) (*shardResult, error) {
	return l.s.mark(), nil
}
func (l localShard) finish(context.Context) (*shardResult, error) {
	return l.s.finish(), nil
}

// shardMessage is one line a child writes to its standard output.
type shardMessage struct {
	Progress *progress    `json:"progress,omitempty"`
	Result   *shardResult `json:"result,omitempty"`
	Mark     *shardResult `json:"mark,omitempty"`
	Error    string       `json:"error,omitempty"`
}

// Commands the parent writes to a child's standard input, one a line.
// Closing the input finishes the child too, so a child never outlives a
// parent that died.
const (
	cmdStorm  = "storm"
	cmdMark   = "mark"
	cmdFinish = "finish"
)

// progressEvery is how often a child reports its counters.
const progressEvery = 100 * time.Millisecond

// RunShard runs a child's shard: spec is the value of ShardEnv, commands
// arrive on in, and progress and the final result leave on out as JSON
// lines. It returns when the parent says finish, closes in, or the spec's
// deadline passes.
func RunShard(ctx context.Context, spec string, in io.Reader, out io.Writer, log *slog.Logger) error {
	var sp shardSpec
	if err := json.Unmarshal([]byte(spec), &sp); err != nil {
		return fmt.Errorf("bench shard: %s: %w", ShardEnv, err)
	}
	input := bufio.NewReader(in)
	if sp.TokensFollow {
		line, err := input.ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &sp.Tokens)
		}
		if err == nil && len(sp.Tokens) != sp.Conns {
			err = fmt.Errorf("%d tokens for %d connections", len(sp.Tokens), sp.Conns)
		}
		if err != nil {
			return fmt.Errorf("bench shard %d: tokens on standard input: %w", sp.Index, err)
		}
	}
	if !sp.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, sp.Deadline)
		defer cancel()
	}
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(m shardMessage) error {
		mu.Lock()
		defer mu.Unlock()
		return enc.Encode(m)
	}
	s, err := startShard(sp, log)
	if err != nil {
		_ = send(shardMessage{Error: err.Error()})
		return fmt.Errorf("bench shard %d: %w", sp.Index, err)
	}
	cmds := make(chan string)
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(input)
		for sc.Scan() {
			select {
			case cmds <- strings.TrimSpace(sc.Text()):
			case <-ctx.Done():
				return
			}
		}
	}()
	t := time.NewTicker(progressEvery)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			log.Warn("bench shard: deadline passed", "shard", sp.Index)
			break loop
		case <-t.C:
			p := s.progress()
			if err := send(shardMessage{Progress: &p}); err != nil {
				break loop // the parent is gone
			}
		case cmd, ok := <-cmds:
			switch {
			case !ok, cmd == cmdFinish:
				break loop
			case cmd == cmdStorm:
				go s.storm() // progress keeps flowing while the drops run
			case cmd == cmdMark:
				if err := send(shardMessage{Mark: s.mark()}); err != nil {
					break loop
				}
			default:
				log.Warn("bench shard: unknown command", "command", cmd)
			}
		}
	}
	r := s.finish()
	r.CPUSeconds = selfCPU().Seconds()
	return send(shardMessage{Result: r})
}

// selfCPU is this process's user and system time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// remoteShard is a shard in a child process.
type remoteShard struct {
	index int
	cmd   waiter
	kill  context.CancelFunc // kills the child
	stdin io.WriteCloser
	marks chan *shardResult // answers to cmdMark, in order
	done  chan struct{}     // closed when the child's output ends
	res   *shardResult      // the final report, once done
	err   error             // why there is none, once done
	mu    sync.Mutex
	last  progress
}

// waiter is the part of exec.Cmd a remote shard needs after starting it.
type waiter interface{ Wait() error }

// startRemote starts a child running spec. The child lives until it
// reports, even past ctx: a run that timed out still wants its children's
// results. Only a child that does not report when asked is killed.
func startRemote(ctx context.Context, cfg *Config, spec shardSpec) (*remoteShard, error) {
	// Tokens are too many for the environment (a few hundred bytes per
	// connection): they follow on the child's standard input, as its
	// first line.
	tokens := spec.Tokens
	spec.Tokens, spec.TokensFollow = nil, tokens != nil
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	life, kill := context.WithCancel(context.WithoutCancel(ctx))
	cmd := cfg.ShardCommand(life)
	cmd.Env = append(cmd.Environ(), ShardEnv+"="+string(js))
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		kill()
		return nil, fmt.Errorf("shard %d: %w", spec.Index, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		kill()
		return nil, fmt.Errorf("shard %d: %w", spec.Index, err)
	}
	if err := cmd.Start(); err != nil {
		kill()
		return nil, fmt.Errorf("shard %d: start %s: %w", spec.Index, cmd.Path, err)
	}
	if tokens != nil {
		line, _ := json.Marshal(tokens) // strings always marshal
		if _, err := stdin.Write(append(line, '\n')); err != nil {
			kill()
			return nil, fmt.Errorf("shard %d: send its tokens: %w", spec.Index, err)
		}
	}
	r := &remoteShard{
		index: spec.Index,
		cmd:   cmd,
		kill:  kill,
		stdin: stdin,
		marks: make(chan *shardResult, 1),
		done:  make(chan struct{}),
	}
	go r.read(stdout, cfg.Logger)
	return r, nil
}

// read follows the child's output until it ends.
func (r *remoteShard) read(stdout io.Reader, log *slog.Logger) {
	defer close(r.done)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 256<<20) // a result with many channels is long
	for sc.Scan() {
		var m shardMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			log.Warn("bench: shard wrote something else than a report", "shard", r.index, "line", sc.Text())
			continue
		}
		switch {
		case m.Error != "":
			r.err = fmt.Errorf("shard %d: %s", r.index, m.Error)
			return
		case m.Result != nil:
			r.res = m.Result
			return
		case m.Mark != nil:
			select {
			case r.marks <- m.Mark:
			default:
				log.Warn("bench: shard answered a mark nobody asked for", "shard", r.index)
			}
		case m.Progress != nil:
			r.mu.Lock()
			r.last = *m.Progress
			r.mu.Unlock()
		}
	}
	err := sc.Err()
	if err == nil {
		err = errors.New("exited without a report")
	}
	r.err = fmt.Errorf("shard %d: %w", r.index, err)
}

func (r *remoteShard) progress() progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func (r *remoteShard) storm() error {
	if _, err := io.WriteString(r.stdin, cmdStorm+"\n"); err != nil {
		return fmt.Errorf("shard %d: storm: %w", r.index, err)
	}
	return nil
}

func (r *remoteShard) mark(ctx context.Context) (*shardResult, error) {
	if _, err := io.WriteString(r.stdin, cmdMark+"\n"); err != nil {
		return nil, fmt.Errorf("shard %d: mark: %w", r.index, err)
	}
	select {
	case m := <-r.marks:
		return m, nil
	case <-r.done:
		if r.err != nil {
			return nil, fmt.Errorf("mark: %w", r.err)
		}
		return nil, fmt.Errorf("shard %d: mark: finished instead", r.index)
	case <-ctx.Done():
		return nil, fmt.Errorf("shard %d: mark: %w", r.index, ctx.Err())
	}
}

func (r *remoteShard) finish(ctx context.Context) (*shardResult, error) {
	_, _ = io.WriteString(r.stdin, cmdFinish+"\n")
	var res *shardResult
	var err error
	select {
	case <-r.done:
		res, err = r.res, r.err
	case <-ctx.Done():
		err = fmt.Errorf("shard %d: no report: %w", r.index, ctx.Err())
		r.kill()
	}
	_ = r.stdin.Close()
	if werr := r.cmd.Wait(); werr != nil && err == nil {
		err = fmt.Errorf("shard %d: %w", r.index, werr)
	}
	r.kill()
	return res, err
}
