; Inno Setup 6 script: a per-user Windows installer for the one-file pneumo-edge.exe.
;
;   python -m installer.build
;   "%ProgramFiles(x86)%\Inno Setup 6\ISCC.exe" /DAppVersion=0.1.0 installer\windows\pneumo-edge.iss
;
; Output: dist\pneumo-edge-setup-<version>.exe. Installs into %LOCALAPPDATA%\Programs\pneumo-edge
; without administrator rights, adds Start-menu entries (app + self-test), and an uninstaller
; (Settings > Apps). The history in %LOCALAPPDATA%\pneumo is user data and is NOT removed on
; uninstall; delete that folder by hand to remove it.
; Sign both pneumo-edge.exe (before this step) and the setup program with your organisation's
; code-signing certificate (signtool) to avoid SmartScreen/antivirus warnings.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif

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
UninstallDisplayIcon={app}\pneumo-edge.exe

[Files]
Source: "..\..\dist\pneumo-edge.exe"; DestDir: "{app}"; Flags: ignoreversion
Source: "..\..\dist\pneumo-edge.sha256"; DestDir: "{app}"; Flags: ignoreversion

[Icons]
Name: "{group}\Pneumonia screening"; Filename: "{app}\pneumo-edge.exe"
Name: "{group}\Pneumonia screening self-test"; Filename: "{cmd}"; Parameters: "/k ""{app}\pneumo-edge.exe"" --self-test"
Name: "{group}\Uninstall pneumonia screening"; Filename: "{uninstallexe}"

[Run]
Filename: "{app}\pneumo-edge.exe"; Description: "Start the app now"; Flags: nowait postinstall skipifsilent
