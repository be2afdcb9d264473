; Inno Setup 6 script: a per-user Windows installer for the one-folder pneumo-edge build.
;
;   python -m installer.build --onedir --dist dist-onedir
;   "%ProgramFiles(x86)%\Inno Setup 6\ISCC.exe" /DAppVersion=0.1.0 installer\windows\pneumo-edge.iss
;
; Input: dist-onedir\pneumo-edge\ (override with /DBuildDir=...): pneumo-edge.exe (windowed: no
; console window, it logs to <data folder>\logs\pneumo-edge.log), pneumo-edge-console.exe
; (the same program with a console, for IT) and _internal\. The one-folder build starts
; faster than the one-file program and unpacks nothing to the temp folder.
; Output: dist\pneumo-edge-setup-<version>.exe. Installs into %LOCALAPPDATA%\Programs\pneumo-edge
; without administrator rights and adds:
;   - Start menu: "Pneumonia screening" (opens the app: starts it, or shows the running one),
;     "Stop pneumonia screening", "Pneumonia screening self-test", "Pneumonia screening log
;     files", "Uninstall pneumonia screening";
;   - a desktop shortcut (a task, ticked by default);
;   - an uninstaller (Settings > Apps) that stops the app and removes the program, and asks
;     whether to delete the data folder too (the history database: patient records). The
;     answer defaults to No: the history is kept; a silent uninstall always keeps it.
; The data folder is the app's own default: %PNEUMO_DATA_DIR% if set, else %LOCALAPPDATA%\pneumo
; (pneumo/app/config.py default_data_dir).
; Sign pneumo-edge.exe, pneumo-edge-console.exe (before this step) and the setup program with
; your organisation's code-signing certificate (signtool) to avoid SmartScreen/antivirus warnings.
; Built and installed/uninstalled silently only by the hosted workflow (.github/workflows/exe.yml).

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef BuildDir
  #define BuildDir "..\..\dist-onedir\pneumo-edge"
#endif
#define AppExe "pneumo-edge.exe"
#define ConsoleExe "pneumo-edge-console.exe"

[Setup]
AppId={{6C3F1F0E-2B7A-4C55-9C7E-5D0B9E7A2F41}
AppName=Pneumonia screening (pneumo-edge)
AppVersion={#AppVersion}
AppPublisher=pneumo project
DefaultDirName={localappdata}\Programs\pneumo-edge
DefaultGroupName=Pneumonia screening
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=pneumo-edge-setup-{#AppVersion}
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName=Pneumonia screening (pneumo-edge)

[Tasks]
Name: "desktopicon"; Description: "Create a desktop shortcut"; GroupDescription: "Shortcuts:"

[InstallDelete]
; an earlier version's program files (another version's _internal must not linger); never the data folder
Type: filesandordirs; Name: "{app}\_internal"
Type: files; Name: "{app}\pneumo-edge.sha256"

[Files]
Source: "{#BuildDir}\{#AppExe}"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#BuildDir}\{#ConsoleExe}"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#BuildDir}\_internal\*"; DestDir: "{app}\_internal"; Flags: ignoreversion recursesubdirs createallsubdirs

[Dirs]
; the log folder, so that its Start-menu shortcut works before the first start; kept on uninstall
Name: "{code:DataDir}\logs"; Flags: uninsneveruninstall

[Icons]
Name: "{group}\Pneumonia screening"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"; Comment: "Open the pneumonia screening app (starts it if it is not running)"
Name: "{group}\Stop pneumonia screening"; Filename: "{cmd}"; Parameters: "/c """"{app}\{#ConsoleExe}"" --stop || pause"""; WorkingDir: "{app}"; IconFilename: "{app}\{#AppExe}"; Comment: "Stop the pneumonia screening app (the history is kept)"
Name: "{group}\Pneumonia screening self-test"; Filename: "{cmd}"; Parameters: "/k ""{app}\{#ConsoleExe}"" --self-test"; WorkingDir: "{app}"; IconFilename: "{app}\{#AppExe}"
Name: "{group}\Pneumonia screening log files"; Filename: "{code:DataDir}\logs"
Name: "{group}\Uninstall pneumonia screening"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Pneumonia screening"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"; Tasks: desktopicon; Comment: "Open the pneumonia screening app"

[Run]
Filename: "{app}\{#AppExe}"; Description: "Start the app now"; Flags: nowait postinstall skipifsilent

[UninstallRun]
; stop a running app first (its files are in use otherwise); the history is closed cleanly
Filename: "{app}\{#ConsoleExe}"; Parameters: "--stop"; WorkingDir: "{app}"; Flags: runhidden waituntilterminated; RunOnceId: "StopPneumoEdge"

[UninstallDelete]
; the start-at-login entry that `pneumo-edge --install-autostart` may have made (pneumo/app/runtime/autostart.py)
Type: files; Name: "{userstartup}\pneumo-edge.cmd"

[Code]
{ The app's data folder: %PNEUMO_DATA_DIR%, else %LOCALAPPDATA%\pneumo (as pneumo/app/config.py). }
function DataDir(Param: String): String;
begin
  Result := GetEnv('PNEUMO_DATA_DIR');
  if Result = '' then
    Result := ExpandConstant('{localappdata}\pneumo');
end;

{ An upgrade: stop the running app so that its files can be replaced. }
function PrepareToInstall(var NeedsRestart: Boolean): String;
var
  ResultCode: Integer;
begin
  if FileExists(ExpandConstant('{app}\{#ConsoleExe}')) then
    Exec(ExpandConstant('{app}\{#ConsoleExe}'), '--stop', '', SW_HIDE, ewWaitUntilTerminated, ResultCode);
  Result := '';
end;

{ After the program is removed: delete the history only if the user says so (default: keep). }
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Folder: String;
begin
  if CurUninstallStep <> usPostUninstall then
    exit;
  Folder := DataDir('');
  if UninstallSilent or not DirExists(Folder) then
    exit;
  if MsgBox('Also delete the data folder?' + #13#10#13#10 + Folder + #13#10#13#10 +
            'It holds the screening history (patient references, results and heatmaps), ' +
            'the installed models and the log files. Choose No to keep it (for example for ' +
            'a later reinstall); it can be deleted by hand at any time.',
            mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES then
  begin
    if not DelTree(Folder, True, True, True) then
      MsgBox('Some files in ' + Folder + ' could not be deleted (in use?). Delete the folder by hand.',
             mbError, MB_OK);
  end;
end;
