;; Query-mode driver for Scheme (GNU Guile), run by backend-ai-krunner as a persistent
;; process. Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN
;; bytes (see krunner/src/query.rs). Snippets are evaluated form by form in the user's
;; module, so definitions persist between runs; the last form's value is written as at the
;; REPL. Output through the current output and error ports goes out as ordered events;
;; (read-line) and (read) take the user's input (the runner asks for it). SIGINT stops a
;; running snippet and keeps the interpreter.
(use-modules (ice-9 rdelim) (ice-9 binary-ports) (rnrs bytevectors) (srfi srfi-1))

(define bai-cmd (fdes->inport 3))
(define bai-ev (fdes->outport 4))
(set-port-encoding! bai-cmd "ISO-8859-1")
(setvbuf bai-ev 'none)

(define (bai-send kind payload)
  (let ((bytes (string->utf8 payload)))
    (put-bytevector bai-ev
                    (string->utf8 (string-append kind " "
                                                 (number->string (bytevector-length bytes))
                                                 "\n")))
    (put-bytevector bai-ev bytes)
    (force-output bai-ev)))

(define (bai-read)
  (let ((header (read-line bai-cmd)))
    (when (eof-object? header) (exit 0))
    (let* ((parts (string-split header #\space))
           (n (string->number (cadr parts)))
           (bytes (if (> n 0) (get-bytevector-n bai-cmd n) (make-bytevector 0))))
      (when (eof-object? bytes) (exit 0))
      (cons (car parts) (utf8->string bytes)))))

(define (bai-stream kind)
  (let ((port (make-soft-port
               (vector (lambda (c) (bai-send kind (string c)))
                       (lambda (s) (bai-send kind s))
                       (lambda () #t)
                       #f
                       #f)
               "w")))
    (setvbuf port 'none)
    port))

(define bai-out (bai-stream "stdout"))
(define bai-err (bai-stream "stderr"))

(define (bai-report key args)
  (if (and (= (length args) 4) (or (string? (cadr args)) (not (cadr args))))
      (display-error #f bai-err (car args) (or (cadr args) "~A") (caddr args) (cadddr args))
      (begin (display "error: " bai-err) (write (cons key args) bai-err) (newline bai-err))))

(define (bai-run code)
  (catch #t
    (lambda ()
      (let ((forms (call-with-input-string code
                     (lambda (p)
                       (let loop ((acc '()))
                         (let ((f (read p)))
                           (if (eof-object? f) (reverse acc) (loop (cons f acc)))))))))
        (let loop ((forms forms) (value *unspecified*))
          (if (null? forms)
              (begin
                (unless (unspecified? value)
                  (write value)
                  (newline))
                0)
              (loop (cdr forms) (eval (car forms) (current-module)))))))
    (lambda (key . args)
      (if (eq? key 'bai-interrupted)
          (display "Interrupted\n" bai-err)
          (bai-report key args))
      1)))

(define (bai-token text)
  (let loop ((i (string-length text)))
    (if (and (> i 0)
             (not (memv (string-ref text (- i 1)) '(#\space #\newline #\tab #\( #\) #\' #\` #\,))))
        (loop (- i 1))
        (substring text i))))

(define (bai-complete text)
  (let ((prefix (bai-token text)) (names '()))
    (for-each
     (lambda (m)
       (module-for-each
        (lambda (sym var)
          (let ((s (symbol->string sym)))
            (when (and (string-prefix? prefix s) (not (string-prefix? "bai-" s)))
              (set! names (cons s names)))))
        m))
     (cons (current-module) (module-uses (current-module))))
    (sort (delete-duplicates names) string<?)))

(sigaction SIGINT (lambda (sig) (throw 'bai-interrupted)))
(chdir (or (getenv "BACKENDAI_WORKDIR") (getcwd)))
(bai-send "ready" "")
(let loop ()
  ;; An interrupt that lands between snippets has nothing to stop.
  (catch 'bai-interrupted
    (lambda ()
      (let* ((msg (bai-read)) (op (car msg)) (text (cdr msg)))
        (cond
         ((string=? op "run")
          (let ((code (with-output-to-port bai-out
                        (lambda ()
                          (with-error-to-port bai-err
                            (lambda () (bai-run text)))))))
            (bai-send "done" (number->string code))))
         ((string=? op "complete")
          (bai-send "completion" (string-join (bai-complete text) "\n"))))))
    (lambda _ #f))
  (loop))
